"""Pareto front snapshots and their members.

Revision ID: 0001
Revises:
Create Date: 2025-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tnas_front_snapshots",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_name", sa.String(length=512), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("n_trials", sa.Integer(), nullable=False),
        sa.Column("hypervolume", sa.Double(), nullable=False),
        sa.Column("reference_point", sa.JSON(), nullable=False),
        sa.Column("objectives", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tnas_front_snapshots"),
    )
    op.create_index(
        "ix_tnas_front_snapshots_study_name_id", "tnas_front_snapshots", ["study_name", "id"]
    )
    op.create_table(
        "tnas_front_members",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("snapshot_id", sa.Integer(), nullable=False),
        sa.Column("trial_number", sa.Integer(), nullable=False),
        sa.Column("config_hash", sa.String(length=64), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("values", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["snapshot_id"],
            ["tnas_front_snapshots.id"],
            name="fk_tnas_front_members_snapshot_id_tnas_front_snapshots",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_tnas_front_members"),
    )
    op.create_index("ix_tnas_front_members_snapshot_id", "tnas_front_members", ["snapshot_id"])


def downgrade() -> None:
    op.drop_index("ix_tnas_front_members_snapshot_id", table_name="tnas_front_members")
    op.drop_table("tnas_front_members")
    op.drop_index("ix_tnas_front_snapshots_study_name_id", table_name="tnas_front_snapshots")
    op.drop_table("tnas_front_snapshots")
