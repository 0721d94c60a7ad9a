"""Alembic environment: runs on the connection handed over by core.storage.migrate."""

from alembic import context

from core.schema import metadata, migrated

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `observe migrate`")

context.configure(
    connection=connection,
    target_metadata=metadata,
    include_name=migrated,
    render_as_batch=connection.dialect.name == "sqlite",
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
