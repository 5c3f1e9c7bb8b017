"""HTTP routes: thin handlers that validate, call one domain function and answer."""

from __future__ import annotations

import json
import logging
from ipaddress import IPv6Address
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field, field_validator

from access import check_registration
from addresses import IPAddress, normalize_ip, resolve_client_ip
from context import AppContext
from errors import BadRequest, NotInFleet
from hostnames import HOSTNAME
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
    """The client's address (see `resolve_client_ip`) and whether a proxy vouched for it."""
    peer = request.client.host if request.client else "::"
    try:
        return resolve_client_ip(
            peer, request.headers.getlist("x-forwarded-for"), context.config.trusted_proxies
        )
    except ValueError:
        raise BadRequest(
            "The client address, or X-Forwarded-For from a trusted proxy, is not an IP address."
        ) from None


def json_answer(content: dict[str, str | None]) -> Response:
    """A 200 JSON answer rendered here, in the shape the route's response model documents.

    The hot routes return it instead of a model instance: FastAPI then skips validating
    and serialising the return value again, which cost a noticeable share of each request.
    """
    body = json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(body, media_type="application/json")


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
    config: str = Field(description="A wg-quick configuration file for the client.")
    address: str
    public_key: str


@router.post(
    "/fleet/{fleet}/register",
    response_model=RegisterResponse,
    responses={
        400: {"description": "The body cannot be read (not UTF-8, or nested too deeply)."},
        401: {"description": "The fleet's registration_token was not sent."},
        403: {"description": "The source address is not in the fleet's register_from."},
        404: {"description": "Unknown fleet."},
        409: {"description": "The public key is registered in another fleet."},
        429: {"description": "Too many registrations from this address (Retry-After)."},
        413: {"description": "The request body is larger than 16 KiB."},
        503: {"description": "No free address, or WireGuard failed; nothing was registered."},
    },
)
async def register(fleet: str, request: Request, body: RegisterRequest | None = None) -> Response:
    """Register a client: allocate an address, add the peer, return a wg-quick config."""
    context: AppContext = request.app.state.context
    settings = context.registry.fleet(fleet)
    source, _ = caller_address(request, context)
    check_registration(
        settings, fleet, source, request.headers.get("authorization"), context.limiter
    )
    registration = await context.registry.register(fleet, body.public_key if body else None, source)
    return json_answer(
        {
            "status": "success",
            "config": registration.config,
            "address": str(registration.address),
            "public_key": registration.public_key,
        }
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


class PingResponse(BaseModel):
    status: Literal["ok"] = "ok"
    hostname: str | None = Field(description="The name assigned to this client, if any.")
    fqdn: str | None = Field(description="`<hostname>.<fleet>.<domain>`, if named.")


def tunnel_caller(request: Request, context: AppContext, fleet: str) -> IPv6Address:
    """The pinging client's address, which must have come through the fleet's tunnel."""
    settings = context.registry.fleet(fleet)
    source, proxied = caller_address(request, context)
    if not isinstance(source, IPv6Address) or source not in settings.subnet:
        raise NotInFleet(
            f"Pings must come through the tunnel of fleet {fleet}: "
            f"{source} is not in {settings.subnet}."
        )
    # Behind a trusted proxy the connection arrives at the proxy's address instead.
    server = request.scope.get("server")
    if not proxied and (server is None or not _is_address(server[0], settings.ip6)):
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
        413: {"description": "The request body is larger than 16 KiB."},
    },
)
async def ping(fleet: str, request: Request, body: PingRequest | None = None) -> Response:
    """Keep a client alive and, with `hostname`, give it a unique name in the fleet."""
    context: AppContext = request.app.state.context
    source = tunnel_caller(request, context, fleet)
    result = await context.pinger.ping(fleet, source, body.hostname if body else None)
    return json_answer({"status": "ok", "hostname": result.hostname, "fqdn": result.fqdn})
