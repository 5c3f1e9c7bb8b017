"""WireGuard's cross-platform configuration protocol, spoken over the daemon's socket.

wireguard-go serves a plain-text protocol at `/var/run/wireguard/<interface>.sock`
(https://www.wireguard.com/xplatform/); `wg` itself tries that socket before the kernel.
Adding a batch of peers this way needs no process: one connection, one `set=1`
request, one `errno=` answer. Only public keys and addresses travel, nothing secret.

Where there is no socket (the kernel module, or no daemon listening) `Unavailable` is
raised and the caller falls back to `wg`, which speaks netlink.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from ipaddress import IPv6Address
from pathlib import Path

from command import CommandError

SOCKET_DIR = Path("/var/run/wireguard")
ANSWER_LIMIT = 64 * 1024


class Unavailable(Exception):
    """No daemon answers on the interface's socket: use `wg` instead."""


class UapiFailed(CommandError):
    """The daemon refused or did not answer the request in time."""


def add_peers_request(peers: Sequence[tuple[str, IPv6Address | str]]) -> bytes:
    """A `set` request adding each peer with its /128, as `wg addconf` would."""
    lines = ["set=1"]
    for key, address in peers:
        lines.append(f"public_key={base64.b64decode(key).hex()}")
        lines.append(f"allowed_ip={address}/128")
    return ("\n".join(lines) + "\n\n").encode("ascii")


async def configure(socket_path: Path, request: bytes, timeout: float) -> None:
    """Send one `set` request; `UapiFailed` unless the daemon answers `errno=0`.

    `Unavailable` when nothing listens at `socket_path`.
    """
    argv = ("uapi", socket_path.name)
    try:
        reader, writer = await asyncio.open_unix_connection(socket_path, limit=ANSWER_LIMIT)
    except OSError as error:  # no socket, nobody listening, or not ours to use
        raise Unavailable(str(error)) from None
    try:
        async with asyncio.timeout(timeout):
            writer.write(request)
            await writer.drain()
            answer = await reader.readuntil(b"\n\n")
    except TimeoutError:
        raise UapiFailed(argv, f"{socket_path} did not answer within {timeout:g} s") from None
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as error:
        raise UapiFailed(argv, f"{socket_path}: {error}") from None
    finally:
        writer.close()
    fields = dict(line.partition("=")[::2] for line in answer.decode("ascii", "replace").split())
    if fields.get("errno") != "0":
        raise UapiFailed(argv, f"{socket_path} refused the peers (errno={fields.get('errno')})")
