"""Alembic environment: migrations always run on a connection supportbot hands over."""

from alembic import context

import accounts.tables  # noqa: F401 - registers the accounts tables in the metadata
from tickets.tables import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `supportbot db upgrade`")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
