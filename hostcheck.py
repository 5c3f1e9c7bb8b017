"""The `Host` header check that closes DNS rebinding.

A web page on evil.example can make its own name resolve to this server's address;
the visitor's browser then sends requests to wg-fleet that the page may read (a
registration answer holds a private key: a tunnel into the fleet). Such requests carry
`Host: evil.example`, so a request is served only when its Host header names this
server:
- a name or `*.domain` pattern in `allowed_hosts` — by default what wg-fleet knows
  about itself: the listen address, each fleet's `ip6` and `external_ip`, the
  machine's host name and FQDN, and `localhost`;
- always `localhost`, any loopback address, and the very address the connection
  arrived at (a browser sends an address only when the page's own origin is that
  address, and no page can make `localhost` resolve elsewhere, so none of them can
  come from a rebound name).
Anything else gets 400 with a sentence. `allowed_hosts: ["*"]` turns the check off.
"""

from __future__ import annotations

import socket

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from addresses import IPAddress, normalize_ip
from config import DEFAULT_HOST, Config

WILDCARD_LISTEN = {"::", "0.0.0.0"}  # noqa: S104 - compared with, never bound here
SHOWN = 80  # characters of a refused Host header repeated in the answer


def machine_names() -> set[str]:
    """This machine's host name and fully qualified name (may ask the resolver)."""
    names = {socket.gethostname(), socket.getfqdn()}
    return {name.lower().rstrip(".") for name in names if name}


def default_allowed_hosts(config: Config) -> tuple[str, ...]:
    """What wg-fleet knows about itself (see the module docstring)."""
    hosts = {"localhost", *machine_names()}
    if config.listen.host not in WILDCARD_LISTEN | {DEFAULT_HOST}:
        hosts.add(config.listen.host)
    for fleet in config.fleets.values():
        hosts.add(str(fleet.ip6))
        hosts.add(fleet.external_ip)
    return tuple(sorted(hosts))


def split_host(header: str) -> str | None:
    """The host of a Host header without its port (IPv6 without brackets), lowercase;
    None when it has no host's shape."""
    value = header.strip().lower()
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        return host
    if value.count(":") == 1:
        value, _, port = value.partition(":")
        if not port.isdigit():
            return None
    return value.rstrip(".") or None


def _address(text: str) -> IPAddress | None:
    """The address `text` spells (any IPv6 zone dropped), or None for a name."""
    try:
        return normalize_ip(text)
    except ValueError:
        return None


class AllowedHosts:
    """ASGI middleware: 400 for a request whose Host header is not this server's."""

    def __init__(self, app: ASGIApp, allowed_hosts: tuple[str, ...]) -> None:
        self.app = app
        self.any = "*" in allowed_hosts
        self._addresses: set[IPAddress] = set()
        self._names: set[str] = set()
        self._suffixes: tuple[str, ...] = ()
        for host in allowed_hosts:
            address = _address(host)
            if address is not None:
                self._addresses.add(address)
            elif host.startswith("*."):
                self._suffixes += (host[1:],)
            else:
                self._names.add(host)

    def admits(self, host: str, arrived_at: str | None) -> bool:
        address = _address(host)
        if address is None:
            return host in self._names or host == "localhost" or host.endswith(self._suffixes)
        if address.is_loopback or address in self._addresses:
            return True
        return arrived_at is not None and _address(arrived_at) == address

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.any or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        values = [value for name, value in scope["headers"] if name == b"host"]
        if not values:  # HTTP/1.0 without Host: no browser, so no rebinding
            await self.app(scope, receive, send)
            return
        header = values[0].decode("latin-1")
        host = split_host(header)
        server = scope.get("server")
        if len(values) == 1 and host is not None and self.admits(host, server and server[0]):
            await self.app(scope, receive, send)
            return
        shown = header[:SHOWN].encode("ascii", "backslashreplace").decode()
        refusal = JSONResponse(
            {
                "detail": f"This server does not answer to the host {shown!r}; "
                "an operator can add it to allowed_hosts."
            },
            status_code=400,
        )
        await refusal(scope, receive, send)
