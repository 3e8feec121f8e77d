"""email channel; the message that started a ticket's wait

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mail_cursors",
        sa.Column("mailbox", sa.String(length=200), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("last_uid", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("mailbox", name=op.f("pk_mail_cursors")),
    )
    op.create_table(
        "mail_ids",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.String(length=512), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["ticket_id"], ["tickets.id"], name=op.f("fk_mail_ids_ticket_id_tickets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mail_ids")),
        sa.UniqueConstraint("message_id", name=op.f("uq_mail_ids_message_id")),
    )
    with op.batch_alter_table("mail_ids", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_mail_ids_ticket_id"), ["ticket_id"], unique=False)

    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("auth", sa.String(length=8), nullable=True))

    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("waiting_message_id", sa.Integer(), nullable=True))

    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index(
            "ix_outbox_recipient_kind_created", ["recipient", "kind", "created_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_recipient_kind_created")

    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.drop_column("waiting_message_id")

    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("auth")

    with op.batch_alter_table("mail_ids", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mail_ids_ticket_id"))

    op.drop_table("mail_ids")
    op.drop_table("mail_cursors")
