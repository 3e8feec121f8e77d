"""The agents' console (issue 15, points 4, 6, 8, 9): tags, people seen in the group, drafts.

`ticket_tags` holds the words agents put on tickets; `group_people` the @usernames of people who
wrote in the agents' group (the Bot API cannot turn a username into an id); `reply_drafts` the
answers held for a button press when `REPLY_MODE=confirm`.

Revision ID: 0012
Revises: 0008
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ticket_tags",
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["ticket_id"], ["tickets.id"], name="fk_ticket_tags_ticket_id_tickets"
        ),
        sa.PrimaryKeyConstraint("ticket_id", "tag", name="pk_ticket_tags"),
    )
    op.create_index("ix_ticket_tags_tag", "ticket_tags", ["tag", "ticket_id"])
    op.create_table(
        "group_people",
        sa.Column("telegram_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("username", sa.String(64), nullable=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("telegram_id", name="pk_group_people"),
    )
    op.create_index("ix_group_people_username", "group_people", ["username"])
    op.create_table(
        "reply_drafts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("agent_telegram_id", sa.BigInteger(), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("attachments", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["ticket_id"], ["tickets.id"], name="fk_reply_drafts_ticket_id_tickets"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_reply_drafts"),
        sa.UniqueConstraint("chat_id", "message_id", name="uq_reply_drafts_chat_id_message_id"),
    )


def downgrade() -> None:
    op.drop_table("reply_drafts")
    op.drop_index("ix_group_people_username", table_name="group_people")
    op.drop_table("group_people")
    op.drop_index("ix_ticket_tags_tag", table_name="ticket_tags")
    op.drop_table("ticket_tags")
