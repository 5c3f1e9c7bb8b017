"""Events, webhook cursors, bans and known server keys; clients remember their
reported online state.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from database import UTCDateTime, text

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("time", UTCDateTime(), nullable=False),
        sa.Column("type", text(16), nullable=False),
        sa.Column("fleet", text(32), nullable=False),
        sa.Column("node", text(63), nullable=False),
        sa.Column("address", text(39), nullable=True),
        sa.Column("public_key", text(44), nullable=True),
        sa.Column("hostname", text(63), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False, server_default="{}"),
        # Ids are never reused (not even after retention empties the table), so that a
        # webhook's cursor and an API client's `after` stay meaningful.
        sqlite_autoincrement=True,
    )
    op.create_index("ix_events_time", "events", ["time"])
    op.create_index("ix_events_fleet_id", "events", ["fleet", "id"])
    op.create_table(
        "webhook_cursors",
        sa.Column("url", sa.String(2000), primary_key=True),
        sa.Column("last_id", sa.Integer(), nullable=False),
    )
    op.create_table(
        "bans",
        sa.Column("public_key", text(44), primary_key=True),
        sa.Column("fleet", text(32), nullable=False),
        sa.Column("address", text(39), nullable=True),
        sa.Column("hostname", text(63), nullable=True),
        sa.Column("banned_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "server_keys",
        sa.Column("fleet", text(32), primary_key=True),
        sa.Column("public_key", text(44), nullable=False),
    )
    with op.batch_alter_table("clients") as batch:
        batch.add_column(
            sa.Column("reported_online", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("clients") as batch:
        batch.drop_column("reported_online")
    op.drop_table("server_keys")
    op.drop_table("bans")
    op.drop_table("webhook_cursors")
    op.drop_index("ix_events_fleet_id", table_name="events")
    op.drop_index("ix_events_time", table_name="events")
    op.drop_table("events")
