"""Alembic environment: migrations always run on a connection supportbot hands over."""

from alembic import context

from supportbot.schema import metadata, models_only

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `supportbot db upgrade`")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    include_object=models_only,
)
with context.begin_transaction():
    context.run_migrations()
