"""The outbox remembers how far a row that takes several messages got.

A long answer split over several Telegram messages, or an agents' notice with its card, copy and
full text, goes out one message at a time. `outbox.progress` is the sender's record of what went
out so far (saved before each further message), so a retry, even in another process after a
crash, sends only the rest.

Revision ID: 0008
Revises: 0005
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("progress", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as table:  # SQLite drops a column by copying the table
        table.drop_column("progress")
