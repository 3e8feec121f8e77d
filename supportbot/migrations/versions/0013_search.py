"""Full-text search over subjects and messages (issue 15, point 1), and `tickets.merged_into_id`
for `/merge` (point 3).

SQLite: FTS5 tables over `messages.text` and `tickets.subject` (external content, so the text is
stored once), kept by triggers on insert, update and delete; `rebuild` indexes the rows already
there. PostgreSQL: GIN indexes over `to_tsvector('simple', …)`, which index existing rows as they
are built. The 'simple' configuration does not stem: customers write in many languages.

Revision ID: 0013
Revises: 0009
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (FTS table, content table, column): constants of this file, never input, in the SQL below.
# ruff: noqa: S608
_INDEXED = (("messages_fts", "messages", "text"), ("tickets_fts", "tickets", "subject"))


def upgrade() -> None:
    # `/merge` (issue 15, point 3): the ticket a merged ticket now lives in.
    op.add_column("tickets", sa.Column("merged_into_id", sa.Integer(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE INDEX ix_messages_search ON messages "
            "USING gin (to_tsvector('simple', left(text, 100000)))"
        )
        op.execute(
            "CREATE INDEX ix_tickets_search ON tickets USING gin (to_tsvector('simple', subject))"
        )
        return
    for fts, table, column in _INDEXED:
        op.execute(
            f"CREATE VIRTUAL TABLE {fts} USING fts5({column}, content='{table}', "
            "content_rowid='id')"
        )
        op.execute(
            f"CREATE TRIGGER {fts}_ai AFTER INSERT ON {table} BEGIN "
            f"INSERT INTO {fts}(rowid, {column}) VALUES (new.id, new.{column}); END"
        )
        op.execute(
            f"CREATE TRIGGER {fts}_ad AFTER DELETE ON {table} BEGIN "
            f"INSERT INTO {fts}({fts}, rowid, {column}) VALUES ('delete', old.id, old.{column}); "
            "END"
        )
        op.execute(
            f"CREATE TRIGGER {fts}_au AFTER UPDATE OF {column} ON {table} BEGIN "
            f"INSERT INTO {fts}({fts}, rowid, {column}) VALUES ('delete', old.id, old.{column}); "
            f"INSERT INTO {fts}(rowid, {column}) VALUES (new.id, new.{column}); END"
        )
        op.execute(f"INSERT INTO {fts}({fts}) VALUES ('rebuild')")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_tickets_search")
        op.execute("DROP INDEX ix_messages_search")
        op.drop_column("tickets", "merged_into_id")
        return
    for fts, _table, _column in _INDEXED:
        for suffix in ("ai", "ad", "au"):
            op.execute(f"DROP TRIGGER {fts}_{suffix}")
        op.execute(f"DROP TABLE {fts}")
    # SQLite 3.35+ drops a column in place (a batch copy of `tickets` would trip its foreign keys)
    op.execute("ALTER TABLE tickets DROP COLUMN merged_into_id")
