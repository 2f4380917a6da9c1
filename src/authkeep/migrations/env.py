"""Alembic environment. Runs on the connection handed over by ``authkeep.db.migrate``."""

from __future__ import annotations

from alembic import context

from authkeep.db import models  # noqa: F401  (registers every table on the metadata)
from authkeep.db.base import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through 'authkeep migrate' (authkeep.db.migrate)")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
