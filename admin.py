"""What admins and monitoring read: the dashboard, the JSON API, metrics and health."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from functools import partial
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import AfterValidator, BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from context import AppContext
from database import Client
from display import ClientView, FleetSummary, client_view
from errors import BadRequest, FleetNotFound
from events import as_json, latest_events
from health import problems as health_problems
from labels import InvalidLabel, parse_selector
from listing import (
    SORTS,
    Cursor,
    InvalidCursor,
    InvalidSearch,
    Page,
    Sort,
    check_search,
    select_page,
)
from routes import ContextDep, TemplatesDep
from status import ONLINE_WINDOW
from wireguard import interface_name

router = APIRouter()

DEFAULT_PAGE = 100
MAX_PAGE = 1000
REFRESH_SECONDS = 15
RECENT_EVENTS = 20  # shown on a fleet's page


def count_clients(
    session: Session, online_since: datetime, remote: Collection[str]
) -> dict[str, tuple[int, int, int]]:
    """Per fleet: clients, clients with a hostname and, for the `remote` fleets (run by
    other nodes), clients whose stored handshake is newer than `online_since`.

    The totals are read from the (fleet, hostname) index alone. Recent handshakes are
    found through the (fleet, last_active) index: last_active is never older than
    last_handshake, so only the recently active rows are read.
    """
    totals = session.execute(
        select(Client.fleet, func.count(Client.id), func.count(Client.hostname)).group_by(
            Client.fleet
        )
    ).all()
    recent: dict[str, int] = {}
    if remote:
        rows = session.execute(
            select(Client.fleet, func.count(Client.id))
            .where(
                Client.fleet.in_(list(remote)),
                Client.last_active >= online_since,
                Client.last_handshake >= online_since,
            )
            .group_by(Client.fleet)
        )
        recent = {fleet: count for fleet, count in rows}
    return {fleet: (total, named, recent.get(fleet, 0)) for fleet, total, named in totals}


async def fleet_summaries(context: AppContext) -> list[FleetSummary]:
    """Every configured fleet. Online counts come from the interface for this node's
    fleets, and from the handshakes their own node stored for the others."""
    now = context.clock()
    remote = set(context.config.fleets) - set(context.config.local_fleets)
    counts = await context.database.read(
        partial(count_clients, online_since=now - ONLINE_WINDOW, remote=remote)
    )
    summaries = []
    for name, settings in context.config.fleets.items():
        total, named, stored_online = counts.get(name, (0, 0, 0))
        local = name in context.config.local_fleets
        summaries.append(
            FleetSummary(
                name=name,
                node=context.config.node_of(name),
                interface=interface_name(name),
                subnet=str(settings.subnet),
                endpoint=settings.endpoint,
                clients=total,
                online=await context.status.online(name, now) if local else stored_online,
                named=named,
            )
        )
    return summaries


async def client_page(
    context: AppContext,
    fleet: str,
    *,
    q: str,
    sort: Sort,
    limit: int,
    cursor: str | None,
    labels: Sequence[tuple[str, str]] = (),
) -> tuple[Page, list[ClientView]]:
    if fleet not in context.config.fleets:
        raise FleetNotFound(fleet)
    try:
        position = Cursor.decode(cursor, sort) if cursor else None
        q = check_search(q)
    except (InvalidCursor, InvalidSearch) as error:
        raise BadRequest(str(error)) from None
    page = await context.database.read(
        lambda session: select_page(
            session, fleet, sort=sort, q=q.strip(), limit=limit, cursor=position, labels=labels
        )
    )
    dump = await context.status.dump(fleet) if fleet in context.config.local_fleets else None
    now = context.clock()
    views = [
        client_view(
            row, domain=context.config.domain, dump=dump, now=now, started_at=context.started_at
        )
        for row in page.rows
    ]
    return page, views


QueryText = Annotated[
    str, Query(max_length=100, description="Prefix of a hostname, address or public key.")
]
SortParam = Annotated[Sort, Query(description="hostname (named first), activity or address.")]


def _selector(text: str) -> str:
    if not text:
        return text  # the dashboard form's empty "add a filter" box
    try:
        parse_selector(text)
    except InvalidLabel as error:
        raise ValueError(str(error)) from None
    return text


LabelParam = Annotated[
    list[Annotated[str, AfterValidator(_selector)]],
    Query(
        max_length=16,
        description="`key:value`; repeat it to require several labels (all must match).",
    ),
]


def selectors(label: Sequence[str]) -> list[tuple[str, str]]:
    """The `label` query values as (key, value) pairs (validated by `LabelParam`)."""
    return [parse_selector(text) for text in label if text]


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index(request: Request, context: ContextDep, templates: TemplatesDep) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        "index.html",
        {"fleets": await fleet_summaries(context), "refresh": REFRESH_SECONDS},
    )


@router.get("/fleet/{fleet}", response_class=HTMLResponse, include_in_schema=False)
async def fleet_page(
    request: Request,
    fleet: str,
    context: ContextDep,
    templates: TemplatesDep,
    q: QueryText = "",
    sort: SortParam = "hostname",
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
    label: LabelParam = [],  # noqa: B006 - FastAPI copies defaults
) -> HTMLResponse:
    label = [text for text in label if text]
    page, views = await client_page(
        context, fleet, q=q, sort=sort, limit=limit, cursor=cursor, labels=selectors(label)
    )
    summary = next(s for s in await fleet_summaries(context) if s.name == fleet)
    recent = await context.database.read(
        lambda session: [as_json(e) for e in latest_events(session, fleet, RECENT_EVENTS)]
    )
    return templates.TemplateResponse(
        request,
        "fleet.html",
        {
            "fleet": summary,
            "clients": views,
            "page": page,
            "q": q,
            "sort": sort,
            "sorts": SORTS,
            "limit": limit,
            "label": label,
            "label_query": "".join(f"&label={quote(text)}" for text in label),
            "now": context.clock(),
            "refresh": REFRESH_SECONDS,
            "events": recent,
            "admin": context.config.admin is not None,
        },
    )


class FleetOut(BaseModel):
    name: str
    node: str = Field(description="The wg-fleet node that runs the fleet.")
    interface: str
    subnet: str
    endpoint: str
    clients: int
    online: int = Field(description="Clients with a WireGuard handshake under 3 minutes old.")
    named: int = Field(description="Clients with a hostname.")


class FleetsOut(BaseModel):
    fleets: list[FleetOut]


class ClientOut(BaseModel):
    address: str
    hostname: str | None
    fqdn: str | None
    public_key: str
    source_ip: str
    registered_at: datetime
    last_seen: datetime = Field(description="Latest registration or ping.")
    last_handshake: datetime | None
    last_activity: datetime = Field(description="What pruning compares with prune_timeout.")
    alive_because: Literal["registration", "ping", "handshake", "grace"]
    online: bool
    labels: dict[str, str] = Field(description="What the client declared in its pings.")


class ClientsOut(BaseModel):
    clients: list[ClientOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


@router.get("/api/fleets", response_model=FleetsOut)
async def api_fleets(context: ContextDep) -> FleetsOut:
    """Every configured fleet with its counts."""
    summaries = await fleet_summaries(context)
    return FleetsOut(fleets=[FleetOut.model_validate(s, from_attributes=True) for s in summaries])


@router.get(
    "/api/fleets/{fleet}/clients",
    response_model=ClientsOut,
    responses={404: {"description": "Unknown fleet."}, 400: {"description": "Bad cursor."}},
)
async def api_clients(
    fleet: str,
    context: ContextDep,
    q: QueryText = "",
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
    sort: SortParam = "hostname",
    label: LabelParam = [],  # noqa: B006 - FastAPI copies defaults
) -> ClientsOut:
    """One page of a fleet's clients; follow `next_cursor` for the rest. With `label`
    (`site:ucf`, repeatable), only the clients that carry every such label."""
    page, views = await client_page(
        context, fleet, q=q, sort=sort, limit=limit, cursor=cursor, labels=selectors(label)
    )
    return ClientsOut(
        clients=[ClientOut.model_validate(v, from_attributes=True) for v in views],
        next_cursor=page.next_cursor,
    )


@router.get("/metrics", response_class=Response, include_in_schema=True)
async def metrics(context: ContextDep) -> Response:
    """Prometheus text format; no per-client labels."""
    summaries = await fleet_summaries(context)
    body = context.metrics.render(
        {s.name: s.clients for s in summaries}, {s.name: s.online for s in summaries}
    )
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/health",
    responses={503: {"description": "The database or an interface is not working."}},
)
async def health(context: ContextDep) -> JSONResponse:
    """`pass` when the database answers and every fleet's interface matches its config;
    `fail` naming each problem otherwise (see health.py)."""
    problems = await health_problems(context)
    body: dict[str, Any] = (
        {"status": "fail", "problems": problems} if problems else {"status": "pass"}
    )
    return JSONResponse(body, status_code=503 if problems else 200)
