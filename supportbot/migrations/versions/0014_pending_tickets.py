"""Issue 15, points 2, 5 and 7: the bytes of files customers mail (`message_files`), tickets
parked by `/pending` while waiting on the customer (`pending_tickets`), and satisfaction asks
with their scores (`satisfaction`).

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pending_tickets",
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=True),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("days", sa.Integer(), nullable=False),
        sa.Column("after_message_id", sa.Integer(), nullable=True),
        sa.Column("remind_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("close_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reminded_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["ticket_id"], ["tickets.id"], name="fk_pending_tickets_ticket_id_tickets"
        ),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.id"], name="fk_pending_tickets_agent_id_agents"
        ),
        sa.PrimaryKeyConstraint("ticket_id", name="pk_pending_tickets"),
    )
    op.create_index("ix_pending_tickets_remind_at", "pending_tickets", ["remind_at"])
    op.create_table(
        "message_files",
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name="fk_message_files_message_id_messages"
        ),
        sa.PrimaryKeyConstraint("message_id", "position", name="pk_message_files"),
    )

    op.create_table(
        "satisfaction",
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=True),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("asked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("score", sa.Integer(), nullable=True),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["ticket_id"], ["tickets.id"], name="fk_satisfaction_ticket_id_tickets"
        ),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.id"], name="fk_satisfaction_agent_id_agents"
        ),
        sa.PrimaryKeyConstraint("ticket_id", name="pk_satisfaction"),
    )
    op.create_index("ix_satisfaction_answered_at", "satisfaction", ["answered_at"])


def downgrade() -> None:
    op.drop_index("ix_satisfaction_answered_at", table_name="satisfaction")
    op.drop_table("satisfaction")
    op.drop_table("message_files")
    op.drop_index("ix_pending_tickets_remind_at", table_name="pending_tickets")
    op.drop_table("pending_tickets")
