"""Customers keep the language they picked with /language.

`customers.language` holds a shipped locale (`en`, `ru`, `zh_Hans`, `es`) or NULL when the
customer never picked one; then the language their Telegram or mail client named last
(`customers.client_language`, kept for the notices sent later) is used.

Revision ID: 0009
Revises: 0011
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("customers", sa.Column("language", sa.String(16), nullable=True))
    op.add_column("customers", sa.Column("client_language", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("customers") as table:  # SQLite drops a column by copying the table
        table.drop_column("client_language")
        table.drop_column("language")
