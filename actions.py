"""What admins may change: remove a client (and ban its key), list and lift bans.

Only when `admin` is configured: on an open server anyone could otherwise delete
clients, so every action answers 403 with a sentence saying why. The dashboard's
remove buttons post a form with a CSRF token (an HMAC of the action under a secret
made at start-up) after a confirmation page.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from datetime import datetime
from functools import partial
from ipaddress import IPv6Address
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel

from bans import Removed, lift_ban, list_bans, remove_client
from command import CommandError
from context import AppContext
from errors import BadRequest, Forbidden
from registry import local_fleet
from routes import ContextDep, TemplatesDep

logger = logging.getLogger(__name__)

router = APIRouter()


def require_admin(context: AppContext) -> None:
    if context.config.admin is None:
        raise Forbidden(
            "Admin actions are off because no `admin` password is configured: without "
            "one, anyone who reaches wg-fleet could remove clients."
        )


def parse_address(address: str) -> str:
    try:
        return str(IPv6Address(address))
    except ValueError:
        raise BadRequest(f"{address!r} is not a client address (an IPv6 address).") from None


async def remove(context: AppContext, fleet: str, address: str, *, ban: bool) -> Removed:
    """Gone at once from the database, the interface and the published files."""
    require_admin(context)
    local_fleet(context.config, fleet)
    at = parse_address(address)
    async with context.fleet_locks[fleet]:
        removed = await context.database.write(
            partial(
                remove_client,
                fleet=fleet,
                address=at,
                ban=ban,
                node=context.config.node_of(fleet),
                time=context.clock(),
            )
        )
        context.roster.remove(fleet, [at])
        try:
            await context.wireguard.remove_peers(fleet, [removed.public_key])
        except CommandError as error:
            logger.error("fleet %s: could not remove the peer of %s: %s", fleet, at, error)
    logger.info(
        "fleet %s: an admin removed %s (%s)%s",
        fleet,
        at,
        removed.hostname or "no name",
        " and banned its key" if ban else "",
    )
    await context.publisher.refresh()
    return removed


class Status(BaseModel):
    status: Literal["removed", "unbanned"]


class BanOut(BaseModel):
    public_key: str
    fleet: str
    address: str | None
    hostname: str | None
    banned_at: datetime


class BansOut(BaseModel):
    bans: list[BanOut]


ADMIN_ONLY: dict[int | str, dict[str, Any]] = {
    403: {"description": "No `admin` is configured: admin actions are off."}
}


@router.delete(
    "/api/fleets/{fleet}/clients/{address}",
    response_model=Status,
    responses={**ADMIN_ONLY, 404: {"description": "Unknown fleet or client."}},
)
async def api_remove(
    fleet: str,
    address: str,
    context: ContextDep,
    ban: Annotated[bool, Query(description="Also ban the client's key.")] = False,
) -> Status:
    """Remove a client now (events `removed`, and `banned` with `ban=true`)."""
    await remove(context, fleet, address, ban=ban)
    return Status(status="removed")


@router.get("/api/bans", response_model=BansOut, responses=ADMIN_ONLY)
async def api_bans(context: ContextDep) -> BansOut:
    """Keys whose registration is refused with 403."""
    require_admin(context)
    bans = await context.database.read(list_bans)
    return BansOut(bans=[BanOut.model_validate(ban, from_attributes=True) for ban in bans])


@router.delete(
    "/api/bans",
    response_model=Status,
    responses={**ADMIN_ONLY, 404: {"description": "The key is not banned."}},
)
async def api_unban(
    context: ContextDep, public_key: Annotated[str, Query(max_length=64)]
) -> Status:
    """Lift a ban: the key may register again."""
    require_admin(context)
    await context.database.write(partial(lift_ban, public_key=public_key))
    logger.info("an admin lifted the ban of a key")
    return Status(status="unbanned")


# --- the dashboard's remove buttons ------------------------------------------------------


def csrf_token(request: Request, fleet: str, address: str) -> str:
    """A token for removing this client, valid while this process runs."""
    secret: bytes | None = getattr(request.app.state, "csrf_secret", None)
    if secret is None:
        secret = request.app.state.csrf_secret = secrets.token_bytes(32)
    return hmac.new(secret, f"remove {fleet} {address}".encode(), hashlib.sha256).hexdigest()


@router.get("/fleet/{fleet}/clients/{address}/remove", include_in_schema=False)
async def confirm_removal(
    request: Request,
    fleet: str,
    address: str,
    context: ContextDep,
    templates: TemplatesDep,
    ban: bool = False,
) -> HTMLResponse:
    require_admin(context)
    local_fleet(context.config, fleet)
    at = parse_address(address)
    return templates.TemplateResponse(
        request,
        "remove.html",
        {"fleet": fleet, "address": at, "ban": ban, "csrf": csrf_token(request, fleet, at)},
    )


@router.post("/fleet/{fleet}/clients/{address}/remove", include_in_schema=False)
async def remove_from_dashboard(
    request: Request, fleet: str, address: str, context: ContextDep
) -> RedirectResponse:
    require_admin(context)
    at = parse_address(address)
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    token = form.get("csrf", [""])[0]
    if not hmac.compare_digest(token.encode(), csrf_token(request, fleet, at).encode()):
        raise Forbidden("The form's CSRF token is missing or stale; open the page again.")
    ban = form.get("ban", [""])[0] == "true"
    await remove(context, fleet, at, ban=ban)
    done = "removed-and-banned" if ban else "removed"
    return RedirectResponse(f"/fleet/{quote(fleet)}?{done}={quote(at)}", status_code=303)
