"""Fair intake: rate windows that hold under concurrency, and the inbox of fetched updates.

`rate_windows` holds, per rule and holder, the latest allowed uses of every "N per window" rule
(link codes, receipts, a customer's commands and new tickets); counting a use locks its row
(`tickets/rate_limits.py`). Receipts were limited by counting recent outbox rows, so their index
`ix_outbox_recipient_kind_created` goes. `inbox` keeps Telegram updates from when they are
fetched until they are handled, so the bot can confirm them to Telegram and poll again while one
chat's backlog is still being worked through (`bot/polling.py`).

Revision ID: 0007
Revises: 0005
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rate_windows",
        sa.Column("rule", sa.String(32), nullable=False),
        sa.Column("holder", sa.String(320), nullable=False),
        sa.Column("uses", sa.JSON(), nullable=False),
        sa.Column("told_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("rule", "holder", name="pk_rate_windows"),
    )
    op.create_table(
        "inbox",
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("source", "seq", name="pk_inbox"),
    )
    with op.batch_alter_table("outbox") as batch_op:
        batch_op.drop_index("ix_outbox_recipient_kind_created")


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch_op:
        batch_op.create_index(
            "ix_outbox_recipient_kind_created", ["recipient", "kind", "created_at"], unique=False
        )
    op.drop_table("inbox")
    op.drop_table("rate_windows")
