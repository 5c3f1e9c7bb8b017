"""Clients counted by the value of one label: the contest's "which sites are complete".

`GET /api/fleets/{fleet}/groups?label=site` answers the counts as JSON; the dashboard
page `/fleet/{fleet}/groups` shows them, linking each value to the filtered fleet page.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import AfterValidator, BaseModel, Field

from admin import REFRESH_SECONDS, fleet_summaries
from errors import FleetNotFound
from inventory import members_online
from labels import check_key
from routes import ContextDep, TemplatesDep

router = APIRouter()


class GroupOut(BaseModel):
    value: str | None = Field(description="The label's value; null for clients without it.")
    clients: int
    online: int


class GroupsOut(BaseModel):
    label: str
    groups: list[GroupOut]


def count_groups(members: Iterable[tuple[Mapping[str, str] | None, bool]], key: str) -> GroupsOut:
    """Clients and online clients per value of label `key`, by value (null last)."""
    counts: dict[str | None, list[int]] = {}
    for labels, online in members:
        tally = counts.setdefault((labels or {}).get(key), [0, 0])
        tally[0] += 1
        tally[1] += online
    ordered = sorted(counts.items(), key=lambda item: (item[0] is None, item[0] or ""))
    return GroupsOut(
        label=key,
        groups=[GroupOut(value=value, clients=n, online=up) for value, (n, up) in ordered],
    )


LabelKey = Annotated[str, AfterValidator(check_key)]


async def fleet_groups(
    context: ContextDep, fleet: str, key: str | None
) -> tuple[GroupsOut, list[str]]:
    """The counts for `key` (default: the first label key any client carries, else
    `site`), and every label key the fleet's clients carry."""
    if fleet not in context.config.fleets:
        raise FleetNotFound(fleet)
    members = await members_online(context, [fleet])
    keys = sorted({k for member, _ in members for k in (member.labels or {})})
    key = key or (keys[0] if keys else "site")
    return count_groups(((m.labels, online) for m, online in members), key), keys


@router.get(
    "/api/fleets/{fleet}/groups",
    response_model=GroupsOut,
    responses={404: {"description": "Unknown fleet."}},
)
async def api_groups(
    fleet: str,
    context: ContextDep,
    label: Annotated[LabelKey, Query(description="The label key to group by, e.g. site.")],
) -> GroupsOut:
    """The fleet's clients counted per value of one label (null: clients without it)."""
    groups, _ = await fleet_groups(context, fleet, label)
    return groups


@router.get("/fleet/{fleet}/groups", response_class=HTMLResponse, include_in_schema=False)
async def groups_page(
    request: Request,
    fleet: str,
    context: ContextDep,
    templates: TemplatesDep,
    label: Annotated[LabelKey | None, Query()] = None,
) -> HTMLResponse:
    groups, keys = await fleet_groups(context, fleet, label)
    summary = next(s for s in await fleet_summaries(context) if s.name == fleet)
    return templates.TemplateResponse(
        request,
        "groups.html",
        {"fleet": summary, "groups": groups, "keys": keys, "refresh": REFRESH_SECONDS},
    )
