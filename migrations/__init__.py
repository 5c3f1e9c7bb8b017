"""Schema migrations (Alembic), run at start-up or by `python3 main.py migrate`.

A database made before migrations existed (wg-fleet 0.1 created its table directly) is
recognised by having `clients` but no `alembic_version`: it is stamped with the first
revision, which describes exactly that schema, and then upgraded like any other.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, inspect

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
BASELINE = "0001"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        tables = set(inspect(connection).get_table_names())
        if "clients" in tables and "alembic_version" not in tables:
            logger.info("stamping a database made before migrations with revision %s", BASELINE)
            command.stamp(config, BASELINE)
        command.upgrade(config, revision)
