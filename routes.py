"""HTTP routes: thin handlers that validate, call one domain function and answer."""

from __future__ import annotations

import json
import logging
from ipaddress import IPv6Address
from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Depends, Request, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field, field_validator

from access import check_registration
from addresses import IPAddress, ip6_text, normalize_ip, resolve_client_ip
from context import AppContext
from errors import BadRequest, NotInFleet
from hostnames import HOSTNAME
from labels import InvalidLabel, Labels, check_labels
from leaving import leave_fleet
from lifetimes import check_open
from wireguard import InvalidKey, normalize_public_key

logger = logging.getLogger(__name__)

router = APIRouter()


async def get_context(request: Request) -> AppContext:
    context: AppContext = request.app.state.context
    return context


async def get_templates(request: Request) -> Jinja2Templates:
    templates: Jinja2Templates = request.app.state.templates
    return templates


ContextDep = Annotated[AppContext, Depends(get_context)]
TemplatesDep = Annotated[Jinja2Templates, Depends(get_templates)]


def caller_address(request: Request, context: AppContext) -> tuple[IPAddress, bool]:
    """The client's address (see `resolve_client_ip`) and whether a proxy vouched for it;
    for registration, which believes `trusted_proxies` (pings never do)."""
    peer = request.client.host if request.client else "::"
    try:
        return resolve_client_ip(
            peer, request.headers.getlist("x-forwarded-for"), context.config.trusted_proxies
        )
    except ValueError:
        raise BadRequest(
            "The client address, or X-Forwarded-For from a trusted proxy, is not an IP address."
        ) from None


def json_answer(content: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    """A 200 JSON answer rendered here, in the shape the route's response model documents.

    The hot routes return it instead of a model instance: FastAPI then skips validating
    and serialising the return value again, which cost a noticeable share of each request.
    """
    body = json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(body, media_type="application/json", headers=headers)


class RegisterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    public_key: str | None = Field(
        default=None,
        description="The client's WireGuard public key (base64 of 32 bytes). "
        "When given, the client keeps its private key and the config has no PrivateKey.",
    )

    @field_validator("public_key")
    @classmethod
    def _is_wireguard_key(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return normalize_public_key(value)
        except InvalidKey as error:
            raise ValueError(f"public_key {error}; expected base64 of 32 bytes") from None


class RegisterResponse(BaseModel):
    status: Literal["success"] = "success"
    config: str = Field(
        description="A wg-quick configuration file for the client.",
        repr=False,  # it may hold the client's private key
    )
    address: str
    public_key: str


@router.post(
    "/fleet/{fleet}/register",
    response_model=RegisterResponse,
    responses={
        400: {"description": "The body cannot be read (not UTF-8, or nested too deeply)."},
        401: {"description": "The fleet's registration_token was not sent."},
        404: {"description": "Unknown fleet."},
        403: {"description": "Outside the fleet's register_from, or the key is banned."},
        409: {"description": "The public key is registered in another fleet."},
        410: {"description": "The fleet's expires_at has passed."},
        429: {"description": "Too many registrations from this address (Retry-After)."},
        413: {"description": "The request body is larger than 16 KiB."},
        503: {"description": "No free address, or WireGuard failed; nothing was registered."},
    },
)
async def register(fleet: str, request: Request, body: RegisterRequest | None = None) -> Response:
    """Register a client: allocate an address, add the peer, return a wg-quick config."""
    context: AppContext = request.app.state.context
    settings = context.registry.fleet(fleet)
    check_open(settings, fleet, context.clock())
    source, _ = caller_address(request, context)
    check_registration(
        settings, fleet, source, request.headers.get("authorization"), context.limiter
    )
    registration = await context.registry.register(fleet, body.public_key if body else None, source)
    return json_answer(
        {
            "status": "success",
            "config": registration.config,
            "address": ip6_text(registration.address),
            "public_key": registration.public_key,
        },
        # The answer may hold a private key: no cache (browser, proxy) may keep it.
        headers={"Cache-Control": "no-store"},
    )


class PingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hostname: str | None = Field(
        default=None,
        description="The name this client wants: 1 to 63 characters from a-z, 0-9, _ and -.",
        examples=["excavator"],
    )

    @field_validator("hostname")
    @classmethod
    def _hostname_allowed(cls, value: str | None) -> str | None:
        if value is not None and not HOSTNAME.fullmatch(value):
            raise ValueError("hostname must be 1 to 63 characters from a-z, 0-9, _ and -")
        return value

    labels: dict[str, Any] | None = Field(
        default=None,
        description="Replaces the client's labels (`{}` clears them; left out: kept). At "
        "most 16; keys [a-z][a-z0-9_]{0,31}, not fleet, hostname, node, address, job, "
        "instance nor starting with __; values 0 to 128 characters, no control characters.",
        examples=[{"site": "ucf", "team": "42"}],
    )

    @field_validator("labels")
    @classmethod
    def _labels_allowed(cls, value: dict[str, Any] | None) -> Labels | None:
        if value is None:
            return None
        try:
            return check_labels(value)
        except InvalidLabel as error:
            raise ValueError(str(error)) from None


class PingResponse(BaseModel):
    status: Literal["ok"] = "ok"
    hostname: str | None = Field(description="The name assigned to this client, if any.")
    fqdn: str | None = Field(description="`<hostname>.<fleet>.<domain>`, if named.")
    labels: dict[str, str] = Field(description="The client's labels, after this ping.")


def tunnel_caller(request: Request, context: AppContext, fleet: str) -> IPv6Address:
    """The pinging client's address, which must have come through the fleet's tunnel.

    Only the connection itself counts: its source address, which WireGuard
    authenticated, and the address it arrived at. Forwarded headers are never read
    here, whatever `trusted_proxies` says: a proxy cannot vouch for a tunnel.
    """
    settings = context.registry.fleet(fleet)
    try:
        source = normalize_ip(request.client.host if request.client else "")
    except ValueError:
        raise BadRequest("The client address is not an IP address.") from None
    if not isinstance(source, IPv6Address) or source not in settings.subnet:
        raise NotInFleet(
            f"Pings must come through the tunnel of fleet {fleet}: "
            f"{source} is not in {settings.subnet}."
        )
    server = request.scope.get("server")
    if server is None or not _is_address(server[0], settings.ip6):
        raise NotInFleet(
            f"Pings must be sent to the fleet's address {settings.ip6} through the tunnel."
        )
    return source


def _is_address(text: str, expected: IPv6Address) -> bool:
    try:
        return normalize_ip(text) == expected
    except ValueError:
        return False


@router.post(
    "/fleet/{fleet}/ping",
    response_model=PingResponse,
    responses={
        400: {"description": "The body cannot be read, or the source is not an IP address."},
        403: {"description": "Not sent through the fleet's tunnel to the fleet's address."},
        404: {"description": "Unknown fleet, or no client registered at the source address."},
        410: {"description": "The fleet's expires_at has passed."},
        413: {"description": "The request body is larger than 16 KiB."},
    },
)
async def ping(fleet: str, request: Request, body: PingRequest | None = None) -> Response:
    """Keep a client alive and, with `hostname`, give it a unique name in the fleet."""
    context: AppContext = request.app.state.context
    check_open(context.registry.fleet(fleet), fleet, context.clock())
    source = tunnel_caller(request, context, fleet)
    result = await context.pinger.ping(
        fleet, source, body.hostname if body else None, body.labels if body else None
    )
    return json_answer(
        {"status": "ok", "hostname": result.hostname, "fqdn": result.fqdn, "labels": result.labels}
    )


class LeaveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LeaveResponse(BaseModel):
    status: Literal["left"] = "left"


@router.post(
    "/fleet/{fleet}/leave",
    response_model=LeaveResponse,
    responses={
        400: {"description": "The body cannot be read, or the source is not an IP address."},
        403: {"description": "Not sent through the fleet's tunnel to the fleet's address."},
        404: {"description": "Unknown fleet, or no client registered at the source address."},
        413: {"description": "The request body is larger than 16 KiB."},
    },
)
async def leave(
    fleet: str,
    request: Request,
    context: ContextDep,
    background: BackgroundTasks,
    body: LeaveRequest | None = None,
) -> LeaveResponse:
    """Remove the calling client at once: row, name, hosts and targets entries, peer.

    Identified exactly like a ping. The peer is removed just after this answer has
    been sent, since the answer itself travels through the tunnel.
    """
    source = tunnel_caller(request, context, fleet)
    background.add_task(await leave_fleet(context, fleet, source))
    return LeaveResponse()
