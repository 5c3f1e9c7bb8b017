"""`GET /api/events`: the event log, oldest first, for scripts that poll it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from config import EventType
from events import DEFAULT_LIMIT, MAX_LIMIT, as_json, select_events
from routes import ContextDep

router = APIRouter()


class EventOut(BaseModel):
    id: int = Field(description="Increasing; pass the last one seen as `after`.")
    time: datetime
    type: EventType
    fleet: str
    node: str = Field(description="The wg-fleet node that recorded the event.")
    address: str | None
    public_key: str | None
    hostname: str | None
    detail: dict[str, Any] = Field(
        description='e.g. {"from": "excavator2", "to": "excavator"} or {"reason": "inactive"}'
    )


class EventsOut(BaseModel):
    events: list[EventOut]
    last_id: int = Field(description="The id of the page's last event, or `after` if none.")


@router.get("/api/events", response_model=EventsOut)
async def api_events(
    context: ContextDep,
    after: Annotated[int, Query(ge=0, description="Only events with a larger id.")] = 0,
    fleet: Annotated[str | None, Query(max_length=32)] = None,
    kind: Annotated[EventType | None, Query(alias="type")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> EventsOut:
    """Lifecycle events after `after`, oldest first; poll with the answer's `last_id`."""
    rows = await context.database.read(
        lambda session: [
            as_json(event)
            for event in select_events(
                session,
                after=after,
                fleets=[fleet] if fleet else [],
                types=[kind] if kind else [],
                limit=limit,
            )
        ]
    )
    return EventsOut(
        events=[EventOut.model_validate(row) for row in rows],
        last_id=rows[-1]["id"] if rows else after,
    )
