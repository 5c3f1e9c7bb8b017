"""Clients left outside an edited subnet ("orphans"): a config edit never deletes them.

The service refuses to start while a fleet it runs has any (exit 2 before serving, or
`StartupError` from the lifespan), naming the fleet, the count and the way out; the
operator's `main.py orphans --config PATH [--remove]` lists them and, when asked, deletes
them — the only way they are ever deleted.
"""

from __future__ import annotations

import sys
from pathlib import Path

from sqlalchemy import inspect
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from config import Config
from database import Database, database_url
from reconcile import Orphan, describe_orphans, find_orphans, remove_orphans


def refusal(config: Config, orphans: list[Orphan], config_path: str) -> str:
    """Why the service does not start, and the way out, for clients outside a subnet."""
    counts = describe_orphans(orphans)
    where = "; ".join(
        f"fleet {fleet} has {count} client(s) outside its subnet {config.fleets[fleet].subnet}"
        for fleet, count in sorted(counts.items())
    )
    return (
        f"wg-fleet does not start: {where} (was the subnet edited?). Nothing was deleted. "
        "Put the old subnet back, or list those clients with "
        f"`python3 main.py orphans --config {config_path}` and delete them by "
        "adding `--remove`."
    )


def check_before_serving(config: Config, config_path: Path) -> str | None:
    """Before serving: the sentence to exit with when clients lie outside an edited subnet
    of a fleet this node runs, else None (also when the database cannot be read yet:
    start-up then reports that itself)."""
    url = database_url(config.database)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return None  # a first start: nothing to check, and no file made here (with 0644)
    database = Database(config.database)
    try:
        if not inspect(database.engine).has_table("clients"):
            return None
        subnets = {fleet: settings.subnet for fleet, settings in config.local_fleets.items()}
        with Session(database.engine) as session:
            orphans = find_orphans(session, subnets)
    except SQLAlchemyError:
        return None
    finally:
        database.close()
    return refusal(config, orphans, str(config_path)) if orphans else None


def run(config: Config, remove: bool) -> int:
    """`main.py orphans --config PATH [--remove]`: list the clients whose address is
    outside their fleet's configured subnet (one per line); with `--remove`, delete them.

    The service refuses to start while there are any; this is the only way wg-fleet
    deletes them. The interface follows at the next start (their peers are removed).
    """
    database = Database(config.database)
    subnets = {fleet: settings.subnet for fleet, settings in config.fleets.items()}
    try:
        database.migrate()
        with Session(database.engine) as session:
            found = find_orphans(session, subnets)
            for orphan in found:
                print(  # noqa: T201 - the command's output
                    f"{orphan.fleet}\t{orphan.address}\t{orphan.hostname or '(none)'}"
                    f"\t{orphan.public_key}\toutside {subnets[orphan.fleet]}"
                )
            if not found:
                print("no client is outside its fleet's subnet", file=sys.stderr)  # noqa: T201
            elif remove:
                removed = remove_orphans(session, found)
                print(f"removed {removed} client(s)", file=sys.stderr)  # noqa: T201
            else:
                print(  # noqa: T201
                    f"{len(found)} client(s) outside their fleet's subnet; add --remove to "
                    "delete them",
                    file=sys.stderr,
                )
    except SQLAlchemyError as error:
        print(f"cannot read the database: {error}", file=sys.stderr)  # noqa: T201
        return 1
    finally:
        database.close()
    return 0
