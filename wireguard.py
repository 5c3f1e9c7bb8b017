"""A typed vocabulary over `wg`, `wg-quick` and X25519 keys.

Key pairs are made in-process with `cryptography`. Each fleet's interface is described
by `<wireguard_dir>/wg_<fleet>.conf`, which holds only the `[Interface]` section: peers
live in the database and are pushed to the interface in bulk (`wg addconf` on stdin,
`wg set … remove` in large chunks), never one process per client.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import IPv6Address, IPv6Interface
from pathlib import Path
from typing import NamedTuple

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from nacl.bindings import crypto_scalarmult_base

import uapi
from addresses import ip6_text, peer_text
from command import CommandError, Runner
from config import FleetConfig
from files import write_if_changed

logger = logging.getLogger(__name__)

CONFIG_MODE = 0o600
REMOVE_CHUNK = 1000  # peers per `wg set` call: keeps argv far below the kernel's limits


class InvalidKey(ValueError):
    pass


@dataclass(frozen=True)
class KeyPair:
    private_key: str
    public_key: str

    def __repr__(self) -> str:  # never let a private key reach a log through repr()
        return f"KeyPair(public_key={self.public_key!r})"


class PeerStatus(NamedTuple):
    """One peer of a dump. A NamedTuple: a dump of 50,000 peers builds one per peer."""

    public_key: str
    endpoint: str | None
    allowed_ips: str  # as `wg` prints them: comma-separated, "" for none
    handshake_epoch: int  # 0: never

    @property
    def latest_handshake(self) -> datetime | None:
        epoch = self.handshake_epoch
        return datetime.fromtimestamp(epoch, UTC) if epoch > 0 else None


@dataclass(frozen=True)
class InterfaceDump:
    """What `wg show <if> dump` says, minus the private key it prints first."""

    public_key: str
    listen_port: int
    peers: dict[str, PeerStatus]


@dataclass(frozen=True)
class LinkState:
    """What `ip -j addr show dev <if>` says about an existing interface."""

    up: bool
    addresses: frozenset[IPv6Interface]


def parse_link(text: str) -> LinkState:
    """Parse `ip -j addr show dev <if>`; `ValueError` when it does not have that shape."""
    try:
        entries = json.loads(text)
        entry = entries[0]
        flags = entry.get("flags", [])
        addresses = frozenset(
            IPv6Interface(f"{info['local']}/{info['prefixlen']}")
            for info in entry.get("addr_info", [])
            if info.get("family") == "inet6"
        )
    except (json.JSONDecodeError, LookupError, TypeError, AttributeError) as error:
        raise ValueError(f"`ip -j addr show` printed something unexpected: {error}") from None
    return LinkState("UP" in flags, addresses)


def interface_name(fleet: str) -> str:
    return f"wg_{fleet}"


def _encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def generate_keypair() -> KeyPair:
    """A fresh key pair, the private key clamped exactly as `wg genkey` does.

    The public key comes from libsodium (PyNaCl), whose fixed-base multiplication took
    24 µs here against 41 µs through `cryptography`: a registration without a key of
    its own makes one pair, and that was a tenth of its cost. `public_key_of` (any key
    read back from a file) still uses `cryptography`, and the tests hold the two equal.
    """
    raw = bytearray(secrets.token_bytes(32))
    raw[0] &= 248
    raw[31] &= 127
    raw[31] |= 64
    private = bytes(raw)
    return KeyPair(_encode(private), _encode(crypto_scalarmult_base(private)))


def decode_key(text: str) -> bytes:
    """The 32 bytes of a base64 WireGuard key; `InvalidKey` for anything else."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidKey("is not valid base64") from None
    if len(raw) != 32:
        raise InvalidKey(f"decodes to {len(raw)} bytes instead of 32")
    return raw


def normalize_public_key(text: str) -> str:
    """Canonical base64 of a client-supplied public key, or `InvalidKey`."""
    return _encode(decode_key(text))


def public_key_of(private_key: str) -> str:
    private = X25519PrivateKey.from_private_bytes(decode_key(private_key))
    return _encode(private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


LAST_EPOCH = 253402300799  # 9999-12-31 23:59:59 UTC, the last second a datetime holds


def handshake_time(field: str, number: int) -> int:
    """A handshake epoch that converts to a datetime; `ValueError` for any other."""
    epoch = int(field)
    if not 0 <= epoch <= LAST_EPOCH:
        raise ValueError(f"line {number} of the wg dump has an impossible handshake time")
    return epoch


def parse_dump(text: str) -> InterfaceDump:
    """Parse `wg show <if> dump`. The private key on the first line is dropped unread.

    Raises `ValueError` when the text does not have the dump's shape.
    """
    lines = [line for line in text.splitlines() if line]
    if not lines:
        raise ValueError("empty wg dump")
    head = lines[0].split("\t")
    if len(head) != 4:
        raise ValueError("the first line of the wg dump does not have 4 fields")
    peers: dict[str, PeerStatus] = {}
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != 8:
            raise ValueError(f"line {number} of the wg dump does not have 8 fields")
        key, _preshared, endpoint, allowed, handshake = fields[:5]
        peers[key] = PeerStatus(
            key,
            None if endpoint == "(none)" else endpoint,
            "" if allowed == "(none)" else allowed,
            handshake_time(handshake, number),
        )
    return InterfaceDump(public_key=head[1], listen_port=int(head[2]), peers=peers)


def read_private_key(config_text: str) -> str | None:
    """The `PrivateKey` of a wg-quick config's `[Interface]` section, if it has a valid one."""
    for line in config_text.splitlines():
        name, _, value = line.partition("=")
        if name.strip().lower() == "privatekey":
            key = value.strip()
            try:
                decode_key(key)
            except InvalidKey:
                return None
            return key
    return None


def render_server_config(private_key: str, fleet: FleetConfig) -> str:
    return (
        "# Written by wg-fleet. Peers are kept in wg-fleet's database, not here.\n"
        "[Interface]\n"
        f"PrivateKey = {private_key}\n"
        f"Address = {fleet.interface_address}\n"
        f"ListenPort = {fleet.port}\n"
    )


def render_peers(peers: Iterable[tuple[str, IPv6Address | str]]) -> str:
    """`[Peer]` sections for `wg addconf`, one /128 per client."""
    return "".join(
        f"[Peer]\nPublicKey = {key}\nAllowedIPs = {peer_text(address)}/128\n\n"
        for key, address in peers
    )


class WireGuard:
    """The server side of every fleet's interface, driven through a command runner."""

    def __init__(
        self,
        runner: Runner,
        wireguard_dir: Path,
        timeout: float = 30.0,
        own_scope: bool = False,
        uapi_dir: Path | None = None,
    ) -> None:
        """`timeout` bounds quick commands; bulk ones and `wg-quick up` get four times it.

        With `own_scope` (under systemd), `wg-quick up` runs in a transient scope unit,
        so that a wireguard-go it starts lives outside the service's cgroup and survives
        the service being stopped or restarted. With `uapi_dir`, peers are added through
        the daemon's socket there when one listens (see `uapi`), else with `wg`.
        """
        self._runner = runner
        self._dir = wireguard_dir
        self.timeout = timeout
        self._own_scope = own_scope
        self._uapi_dir = uapi_dir
        self._daemons: dict[str, uapi.Daemon] = {}  # interface -> its socket's connection

    def config_path(self, fleet: str) -> Path:
        return self._dir / f"{interface_name(fleet)}.conf"

    async def ensure_server_config(
        self, fleet: str, settings: FleetConfig, has_clients: bool = False
    ) -> str:
        """Write the fleet's config; return its public key.

        The server key is never silently replaced: the file's key is kept; when the file
        is gone but the interface still runs, the interface's key is taken (read into
        memory, never into an argv or a log) and the file written again. Only when both
        are gone is a new key pair made — a key change, logged as a warning when the
        fleet has clients (they must register again). Address and port follow the YAML.
        """
        path = self.config_path(fleet)
        interface = interface_name(fleet)
        try:
            private_key = read_private_key(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            private_key = None
        if private_key is None:
            if path.exists():
                raise RuntimeError(f"{path} has no valid PrivateKey; fix or remove the file")
            private_key = await self.interface_private_key(fleet)
            if private_key is not None:
                logger.warning(
                    "%s was missing; took the key of the running interface %s and wrote it "
                    "again (public key %s)",
                    path,
                    interface,
                    public_key_of(private_key),
                )
            else:
                private_key = generate_keypair().private_key
                if has_clients:
                    logger.warning(
                        "key change: %s and the interface %s are both gone; generated a new "
                        "key pair (public key %s): the fleet's clients must register again",
                        path,
                        interface,
                        public_key_of(private_key),
                    )
                else:
                    logger.info(
                        "generated a key pair for %s in %s (public key %s)",
                        interface,
                        path,
                        public_key_of(private_key),
                    )
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_if_changed(path, render_server_config(private_key, settings), CONFIG_MODE)
        return public_key_of(private_key)

    def private_key(self, fleet: str) -> str | None:
        """The private key in the fleet's config file (for repairing the interface)."""
        try:
            return read_private_key(self.config_path(fleet).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    async def interface_private_key(self, fleet: str) -> str | None:
        """The running interface's private key, or None when there is no such interface.

        `wg` prints it on stdout, which stays in this process's memory: it is never put
        into an argv, and a `CommandResult` is never logged.
        """
        result = await self._runner.run(
            ["wg", "show", interface_name(fleet), "private-key"], check=False, timeout=self.timeout
        )
        key = result.stdout.strip()
        if result.returncode != 0 or not key or key == "(none)":
            return None
        try:
            decode_key(key)
        except InvalidKey:
            return None
        return key

    async def link(self, fleet: str) -> LinkState | None:
        """Whether the interface is up and which IPv6 addresses it holds; None if absent."""
        result = await self._runner.run(
            ["ip", "-j", "addr", "show", "dev", interface_name(fleet)],
            check=False,
            timeout=self.timeout,
        )
        if result.returncode != 0:
            return None
        return parse_link(result.stdout)

    async def set_up(self, fleet: str) -> None:
        await self._runner.run(
            ["ip", "link", "set", "up", "dev", interface_name(fleet)], timeout=self.timeout
        )

    async def add_address(self, fleet: str, address: IPv6Interface) -> None:
        await self._runner.run(
            ["ip", "-6", "addr", "add", str(address), "dev", interface_name(fleet)],
            timeout=self.timeout,
        )

    async def set_listen_port(self, fleet: str, port: int) -> None:
        await self._runner.run(
            ["wg", "set", interface_name(fleet), "listen-port", str(port)], timeout=self.timeout
        )

    async def set_private_key(self, fleet: str, private_key: str) -> None:
        """Give the interface `private_key`, passed on stdin (never in argv)."""
        await self._runner.run(
            ["wg", "set", interface_name(fleet), "private-key", "/dev/stdin"],
            stdin=private_key + "\n",
            timeout=self.timeout,
        )

    async def set_allowed_ips(
        self, fleet: str, peers: Sequence[tuple[str, IPv6Address | str]]
    ) -> None:
        """Replace the allowed IPs of existing peers (their sessions and endpoints stay)."""
        for start in range(0, len(peers), REMOVE_CHUNK):
            argv = ["wg", "set", interface_name(fleet)]
            for key, address in peers[start : start + REMOVE_CHUNK]:
                argv += ["peer", key, "allowed-ips", f"{address}/128"]
            await self._runner.run(argv, timeout=4 * self.timeout)

    async def is_up(self, fleet: str) -> bool:
        """Whether the fleet's interface exists and is administratively up."""
        result = await self._runner.run(
            ["ip", "-o", "link", "show", "dev", interface_name(fleet)],
            check=False,
            timeout=self.timeout,
        )
        flags = result.stdout.partition("<")[2].partition(">")[0].split(",")
        return result.returncode == 0 and "UP" in flags

    async def bring_up(self, fleet: str) -> None:
        """Bring the fleet's interface up with `wg-quick`, or set an existing one up.

        `wg-quick` runs in a session of its own: where it falls back to wireguard-go,
        that daemon must outlive this process and its process group.
        """
        interface = interface_name(fleet)
        exists = await self._runner.run(
            ["ip", "link", "show", "dev", interface], check=False, timeout=self.timeout
        )
        if exists.returncode == 0:
            await self._runner.run(
                ["ip", "link", "set", "up", "dev", interface], timeout=self.timeout
            )
            return
        up = ["wg-quick", "up", str(self.config_path(fleet))]
        if self._own_scope:
            scope = f"--unit=wg-fleet-{interface}-{time.time_ns()}"
            try:
                await self._runner.run(
                    ["systemd-run", "--scope", "--quiet", "--collect", scope, "--", *up],
                    new_session=True,
                    timeout=4 * self.timeout,
                )
                return
            except CommandError as error:
                if await self.is_up(fleet):
                    raise
                logger.warning(
                    "could not give %s a scope of its own (%s); a wireguard-go serving it "
                    "would stop with this service",
                    interface,
                    error,
                )
        await self._runner.run(up, new_session=True, timeout=4 * self.timeout)

    async def dump(self, fleet: str) -> InterfaceDump:
        result = await self._runner.run(
            ["wg", "show", interface_name(fleet), "dump"], timeout=self.timeout
        )
        # 50,000 peers take ~100 ms to parse: keep that off the event loop.
        return await asyncio.to_thread(parse_dump, result.stdout)

    async def add_peers(self, fleet: str, peers: Sequence[tuple[str, IPv6Address | str]]) -> None:
        """Add the peers in one request: over the daemon's socket, else one `wg addconf`.

        Raises `CommandError`; some peers may have been added before it failed.
        """
        if not peers:
            return
        if self._uapi_dir is not None:
            interface = interface_name(fleet)
            daemon = self._daemons.get(interface)
            if daemon is None:
                daemon = uapi.Daemon(self._uapi_dir / f"{interface}.sock")
                self._daemons[interface] = daemon
            started = time.monotonic()
            try:
                await daemon.configure(uapi.add_peers_request(peers), 4 * self.timeout)
                logger.debug(
                    "added %d peer(s) over %s in %.1f ms",
                    len(peers),
                    daemon.socket_path,
                    (time.monotonic() - started) * 1000,
                )
                return
            except uapi.Unavailable:
                pass  # the kernel module, or no daemon: `wg` speaks netlink
        await self._runner.run(
            ["wg", "addconf", interface_name(fleet), "/dev/stdin"],
            stdin=render_peers(peers),
            timeout=4 * self.timeout,
        )

    def close(self) -> None:
        """Close the connections kept open to the daemons' sockets."""
        for daemon in self._daemons.values():
            daemon.close()

    async def remove_peers(self, fleet: str, public_keys: Sequence[str]) -> None:
        for start in range(0, len(public_keys), REMOVE_CHUNK):
            argv = ["wg", "set", interface_name(fleet)]
            for key in public_keys[start : start + REMOVE_CHUNK]:
                argv += ["peer", key, "remove"]
            await self._runner.run(argv, timeout=4 * self.timeout)


def render_client_config(
    *,
    private_key: str | None,
    address: IPv6Address,
    server_public_key: str,
    fleet: FleetConfig,
) -> str:
    """The wg-quick file a client runs; without `PrivateKey` when the client kept its own."""
    return client_interface(private_key, address) + server_peer(server_public_key, fleet)


def client_interface(private_key: str | None, address: IPv6Address) -> str:
    """The client's own part of its wg-quick file (see `render_client_config`)."""
    key = f"PrivateKey = {private_key}\n" if private_key is not None else ""
    return f"[Interface]\n{key}Address = {ip6_text(address)}/128\n"


def server_peer(server_public_key: str, fleet: FleetConfig) -> str:
    """The part of a client's wg-quick file that is the same for the whole fleet."""
    lines = [
        "",
        "[Peer]",
        f"PublicKey = {server_public_key}",
        f"Endpoint = {fleet.endpoint}",
        f"AllowedIPs = {', '.join(str(network) for network in fleet.allowed_ips)}",
    ]
    if fleet.persistent_keepalive:
        lines.append(f"PersistentKeepalive = {fleet.persistent_keepalive}")
    return "\n".join(lines) + "\n"
