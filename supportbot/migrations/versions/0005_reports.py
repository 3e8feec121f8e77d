"""Reports: a covering index for a month's response figures.

The monthly report reads plan, channel, agent and business hours of every response answered in
a month (`tickets/reports/query.py`). With these columns in the index, that read is an
index-only range scan instead of a table lookup per response (three times less work on SQLite
for 150,000 responses). It starts with `answered_at`, so it replaces `ix_responses_answered_at`.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ["answered_at", "plan", "channel", "agent_id", "business_hours", "id"]


def upgrade() -> None:
    op.create_index("ix_responses_month_figures", "responses", COLUMNS)
    op.drop_index("ix_responses_answered_at", table_name="responses")


def downgrade() -> None:
    op.create_index("ix_responses_answered_at", "responses", ["answered_at"])
    op.drop_index("ix_responses_month_figures", table_name="responses")
