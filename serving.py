"""How the process serves HTTP: the listening socket, uvicorn's settings, signals."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import MutableMapping
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from config import ListenConfig
from errors import StartupError

logger = logging.getLogger("wg_fleet")


def bind_socket(listen: ListenConfig) -> socket.socket:
    """A listening TCP socket; `::` answers on IPv6 and IPv4 alike (dual stack)."""
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    infos = socket.getaddrinfo(listen.host, listen.port, type=socket.SOCK_STREAM)
    if ":" not in listen.host and "." not in listen.host:
        family = infos[0][0]
    address = next(info[4] for info in infos if info[0] == family)
    # Protocol IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on accepted sockets whose
    # `proto` says TCP, and they inherit it from this one. Without it, a response written
    # in two pieces (headers, body) waits for the client's delayed ACK on a kept-alive
    # connection: about 40 ms a request. TCP_NODELAY on the listener is inherited as well.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(address)
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class CoalescingTransport:
    """A transport that sends what is written during one step of the event loop at once.

    uvicorn writes a response in two pieces, status line and headers, then the body: two
    TCP segments, and through a WireGuard tunnel two packets to encrypt and decrypt. Held
    until the end of the step, they leave as one. Everything else is the real transport's.
    """

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self._pending.append(bytes(data))

    def flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, writing through a `CoalescingTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport))  # type: ignore[arg-type]


class QuietStartupFailure:
    """Keeps uvicorn from printing a traceback when start-up fails for a known reason.

    The lifespan has logged one sentence already; uvicorn still says it is exiting.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_quietly(message: MutableMapping[str, Any]) -> None:
            # Starlette sends the traceback as the message; for a StartupError the log
            # already has its sentence, anything else keeps its traceback.
            text = str(message.get("message", ""))
            if message["type"] == "lifespan.startup.failed" and "StartupError" in text:
                message = {"type": message["type"], "message": ""}
            await send(message)

        try:
            await self.app(scope, receive, send_quietly)
        except StartupError as error:
            logger.error("%s", error)


def _exit_cleanly(signum: int, _frame: object) -> None:
    # uvicorn re-raises the signal that stopped it once it has shut down gracefully;
    # by then everything is closed, so that is a normal exit.
    raise SystemExit(0)


def serve(app: ASGIApp, sock: socket.socket, log_level: str) -> int:
    """Run `app` on `sock` with wg-fleet's uvicorn settings until SIGTERM or SIGINT.

    The benchmark's hello-world baseline is served through this same function.
    """
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            lifespan="on",
            proxy_headers=False,  # X-Forwarded-For is believed only from trusted_proxies
            server_header=False,
            loop="asyncio",  # uvloop spawned subprocesses ~6x slower here
            http=CoalescingHttpToolsProtocol,
            log_config=None,
            log_level=log_level,
            access_log=log_level == "debug",
            timeout_graceful_shutdown=10,
        )
    )
    signal.signal(signal.SIGTERM, _exit_cleanly)
    signal.signal(signal.SIGINT, _exit_cleanly)
    server.run(sockets=[sock])
    return 0 if server.started else 1
