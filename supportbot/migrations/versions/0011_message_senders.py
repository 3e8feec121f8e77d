"""Each message keeps its own sender, and an agent's vouch for an unverified one.

`messages.sender_address` and `sender_name` are who wrote this message (a colleague writing
into a ticket is not its owner); `vouched_at` is set on a customer message whose sender failed
SPF/DKIM/DMARC once an agent vouched for it with `/vouch N`, which ends the ticket's warning;
`raw_source` keeps a mail whose MIME structure was broken, for the agents as an `.eml` file.

Revision ID: 0011
Revises: 0012
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("sender_address", sa.String(320), nullable=True))
    op.add_column("messages", sa.Column("sender_name", sa.String(200), nullable=True))
    op.add_column("messages", sa.Column("vouched_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("messages", sa.Column("raw_source", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as table:  # SQLite drops a column by copying the table
        table.drop_column("raw_source")
        table.drop_column("vouched_at")
        table.drop_column("sender_name")
        table.drop_column("sender_address")
