"""The clients table as wg-fleet 0.1 created it.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from database import UTCDateTime, text

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "clients",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("fleet", text(32), nullable=False),
        sa.Column("address", text(39), nullable=False),
        sa.Column("public_key", text(44), nullable=False),
        sa.Column("hostname", text(63), nullable=True),
        sa.Column("requested_hostname", text(63), nullable=True),
        sa.Column("source_ip", text(45), nullable=False),
        sa.Column("registered_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen", UTCDateTime(), nullable=False),
        sa.Column("last_handshake", UTCDateTime(), nullable=True),
        sa.Column("last_active", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("public_key", name="uq_clients_public_key"),
        sa.UniqueConstraint("fleet", "address", name="uq_clients_fleet_address"),
        sa.UniqueConstraint("fleet", "hostname", name="uq_clients_fleet_hostname"),
    )
    op.create_index("ix_clients_fleet_last_active", "clients", ["fleet", "last_active"])


def downgrade() -> None:
    op.drop_index("ix_clients_fleet_last_active", table_name="clients")
    op.drop_table("clients")
