"""Alembic's entry point: wg-fleet always passes the connection to migrate."""

from __future__ import annotations

from alembic import context

from database import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `python3 main.py migrate`")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
