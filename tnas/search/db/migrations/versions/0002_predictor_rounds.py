"""Per-round quality of the predictors of predictor-guided samplers.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tnas_predictor_rounds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_name", sa.String(length=512), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("objective", sa.String(length=256), nullable=False),
        sa.Column("family", sa.String(length=64), nullable=False),
        sa.Column("n_train", sa.Integer(), nullable=False),
        sa.Column("n_test", sa.Integer(), nullable=False),
        sa.Column("kendall", sa.Double(), nullable=True),
        sa.Column("spearman", sa.Double(), nullable=True),
        sa.Column("mape", sa.Double(), nullable=True),
        sa.Column("cv_kendall", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_tnas_predictor_rounds"),
    )
    op.create_index(
        "ix_tnas_predictor_rounds_study_name_id", "tnas_predictor_rounds", ["study_name", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_tnas_predictor_rounds_study_name_id", table_name="tnas_predictor_rounds")
    op.drop_table("tnas_predictor_rounds")
