"""Heartbeats of the search drivers running a study now.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tnas_driver_heartbeats",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("study_name", sa.String(length=512), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("beat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tnas_driver_heartbeats"),
    )
    op.create_index(
        "ix_tnas_driver_heartbeats_study_name", "tnas_driver_heartbeats", ["study_name"]
    )


def downgrade() -> None:
    op.drop_index("ix_tnas_driver_heartbeats_study_name", table_name="tnas_driver_heartbeats")
    op.drop_table("tnas_driver_heartbeats")
