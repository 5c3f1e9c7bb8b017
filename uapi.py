"""WireGuard's cross-platform configuration protocol, spoken over the daemon's socket.

wireguard-go serves a plain-text protocol at `/var/run/wireguard/<interface>.sock`
(https://www.wireguard.com/xplatform/); `wg` itself tries that socket before the kernel.
Adding a batch of peers this way needs no process: one `set=1` request, one `errno=`
answer, on a connection kept open for the next batch. Only public keys and addresses
travel, nothing secret.

Where there is no socket (the kernel module, or no daemon listening) `Unavailable` is
raised and the caller falls back to `wg`, which speaks netlink.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from ipaddress import IPv6Address
from pathlib import Path

from addresses import peer_text
from command import CommandError

SOCKET_DIR = Path("/var/run/wireguard")
ANSWER_LIMIT = 64 * 1024


class Unavailable(Exception):
    """No daemon answers on the interface's socket: use `wg` instead."""


class UapiFailed(CommandError):
    """The daemon refused or did not answer the request in time."""


class _Closed(Exception):
    """The daemon closed a kept-open connection (it was restarted, say)."""


def add_peers_request(peers: Sequence[tuple[str, IPv6Address | str]]) -> bytes:
    """A `set` request adding each peer with its /128, as `wg addconf` would."""
    lines = ["set=1"]
    for key, address in peers:
        lines.append(f"public_key={base64.b64decode(key).hex()}")
        lines.append(f"allowed_ip={peer_text(address)}/128")
    return ("\n".join(lines) + "\n\n").encode("ascii")


class Daemon:
    """A connection to one interface's socket, kept open between requests (wireguard-go
    answers any number of them on one connection); requests go one at a time."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self._lock = asyncio.Lock()
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def configure(self, request: bytes, timeout: float) -> None:
        """Send one `set` request; `UapiFailed` unless the daemon answers `errno=0`.

        `Unavailable` when nothing listens at the socket. A kept-open connection found
        closed is replaced once: repeating a `set` that adds peers changes nothing.
        """
        async with self._lock:
            reused = self._streams is not None
            try:
                await self._exchange(request, timeout)
            except _Closed:
                self.close()
                if not reused:
                    raise UapiFailed(
                        self._argv, f"{self.socket_path} closed the connection"
                    ) from None
                try:
                    await self._exchange(request, timeout)
                except _Closed:
                    self.close()
                    raise UapiFailed(
                        self._argv, f"{self.socket_path} closed the connection"
                    ) from None
            except BaseException:
                self.close()
                raise

    @property
    def _argv(self) -> tuple[str, ...]:
        return ("uapi", self.socket_path.name)

    async def _exchange(self, request: bytes, timeout: float) -> None:
        if self._streams is None:
            try:
                self._streams = await asyncio.open_unix_connection(
                    self.socket_path, limit=ANSWER_LIMIT
                )
            except OSError as error:  # no socket, nobody listening, or not ours to use
                raise Unavailable(str(error)) from None
        reader, writer = self._streams
        try:
            async with asyncio.timeout(timeout):
                writer.write(request)
                await writer.drain()
                answer = await reader.readuntil(b"\n\n")
        except TimeoutError:
            raise UapiFailed(
                self._argv, f"{self.socket_path} did not answer within {timeout:g} s"
            ) from None
        except (asyncio.IncompleteReadError, ConnectionError):
            raise _Closed from None
        except (OSError, asyncio.LimitOverrunError) as error:
            raise UapiFailed(self._argv, f"{self.socket_path}: {error}") from None
        fields = dict(
            line.partition("=")[::2] for line in answer.decode("ascii", "replace").split()
        )
        if fields.get("errno") != "0":
            # The daemon may have stopped reading the request half-way: start afresh.
            self.close()
            raise UapiFailed(
                self._argv, f"{self.socket_path} refused the peers (errno={fields.get('errno')})"
            )

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None
