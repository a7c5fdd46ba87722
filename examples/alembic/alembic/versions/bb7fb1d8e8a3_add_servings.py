"""add servings to recipes

Revision ID: bb7fb1d8e8a3
Revises: 4ec49e1f4ba8
Create Date: 2024-01-15 08:45:00
"""
from alembic import op
import sqlalchemy as sa

revision = "bb7fb1d8e8a3"
down_revision = "4ec49e1f4ba8"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "recipes",
        sa.Column("servings", sa.Integer, nullable=False, server_default="1"),
    )


def downgrade() -> None:
    op.drop_column("recipes", "servings")
