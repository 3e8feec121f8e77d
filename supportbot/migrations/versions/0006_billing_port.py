"""The two-way Billing port: ledger imports, refund choices, provisional SLA credits.

* `ledger_imports` records every applied billing export; the built-in ledger's answers are "as
  of" the newest one, and a month's data counts as final once an import was made after it.
* `refunds.scope` and `refunds.reason`: everything eligible, only the Pro upgrade, only the
  balance, or an admin's full refund outside the 7-day window (with its reason).
* `sla_credits.provisional`: a credit given on the 10th from data not declared final yet, topped
  up once it is.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ledger_imports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("records", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_imports")),
    )
    op.create_index(op.f("ix_ledger_imports_at"), "ledger_imports", ["at"])
    with op.batch_alter_table("refunds") as batch:
        batch.add_column(
            sa.Column("scope", sa.String(length=16), server_default="all", nullable=False)
        )
        batch.add_column(sa.Column("reason", sa.String(length=500), nullable=True))
    with op.batch_alter_table("sla_credits") as batch:
        batch.add_column(
            sa.Column("provisional", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("sla_credits") as batch:
        batch.drop_column("provisional")
    with op.batch_alter_table("refunds") as batch:
        batch.drop_column("reason")
        batch.drop_column("scope")
    op.drop_index(op.f("ix_ledger_imports_at"), table_name="ledger_imports")
    op.drop_table("ledger_imports")
