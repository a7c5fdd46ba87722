"""create recipes

Revision ID: 4ec49e1f4ba8
Revises:
Create Date: 2024-01-14 15:30:00
"""
from alembic import op
import sqlalchemy as sa

revision = "4ec49e1f4ba8"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "recipes",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("title", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("recipes")
