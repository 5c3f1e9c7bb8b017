"""What `/health` checks: the database answers, every interface of this node's fleets
matches its config (exists, up, its address, port and key), the last pass over each
fleet succeeded (it repairs peers), and the published files could be written.

Each problem is one sentence naming the fleet or file and what differs; the sentences
say what is wrong, not internals (the log has those), since `/health` is open.
"""

from __future__ import annotations

from sqlalchemy import text

from context import AppContext
from errors import DatabaseUnavailable
from reconcile import interface_differences
from wireguard import interface_name


async def database_problem(context: AppContext) -> str | None:
    try:
        await context.database.read(lambda session: session.execute(text("SELECT 1")).scalar())
    except DatabaseUnavailable as error:
        cause = type(error.__cause__).__name__ if error.__cause__ else "no answer"
        return f"the database does not answer ({cause})"
    except Exception as error:  # noqa: BLE001 - any failure means the database is unusable
        return f"the database does not answer ({type(error).__name__})"
    return None


async def problems(context: AppContext) -> list[str]:
    """Every problem found now; empty when all is well."""
    found: list[str] = []
    problem = await database_problem(context)
    if problem:
        found.append(problem)
    for fleet, settings in context.config.local_fleets.items():
        try:
            link = await context.link_states.link(fleet)
        except Exception:  # noqa: BLE001 - `ip` itself failing: the interface is unknown
            found.append(
                f"fleet {fleet}: the state of interface {interface_name(fleet)} cannot be read"
            )
            continue
        dump = await context.status.dump(fleet) if link is not None else None
        key = context.server_keys.get(fleet, "")
        for difference in interface_differences(interface_name(fleet), settings, key, link, dump):
            found.append(f"fleet {fleet}: {difference.text}")
        failure = context.failed_passes.get(fleet)
        if failure:
            found.append(failure)
    found += context.publisher.failures()
    return found
