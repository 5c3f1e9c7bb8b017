"""wireguard.py: keys, dump parsing, rendering and the WireGuard driver on a fake runner."""

from __future__ import annotations

import base64
import logging
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import IPv6Address, IPv6Interface
from pathlib import Path
from typing import Any

import pytest

from command import DEFAULT_TIMEOUT, CommandResult
from config import FleetConfig
from wireguard import (
    REMOVE_CHUNK,
    InterfaceDump,
    InvalidKey,
    KeyPair,
    LinkState,
    PeerStatus,
    WireGuard,
    decode_key,
    generate_keypair,
    normalize_public_key,
    parse_dump,
    parse_link,
    public_key_of,
    read_private_key,
    render_client_config,
    render_peers,
    render_server_config,
)

PRIVATE = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
PUBLIC = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
PEER_A = base64.b64encode(bytes(range(32))).decode()
PEER_B = base64.b64encode(bytes(range(32, 64))).decode()


def fleet(**changes: Any) -> FleetConfig:
    return FleetConfig.model_validate(
        {
            "ip6": "fd00:a0a8:34d:2a00::1",
            "subnet": "fd00:a0a8:34d:2a00::/64",
            "external_ip": "1.2.3.4",
            "port": 51820,
            **changes,
        }
    )


@dataclass(frozen=True)
class Call:
    argv: tuple[str, ...]
    stdin: str | None
    timeout: float
    check: bool
    new_session: bool


class FakeRunner:
    """Records what would have run; answers from `replies` (keyed by argv) or with
    exit status 0 and `stdout`."""

    def __init__(
        self, stdout: str = "", replies: dict[tuple[str, ...], tuple[int, str]] | None = None
    ) -> None:
        self.stdout = stdout
        self.replies = replies or {}
        self.calls: list[Call] = []

    async def run(
        self,
        argv: Sequence[str],
        *,
        stdin: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        check: bool = True,
        new_session: bool = False,
    ) -> CommandResult:
        self.calls.append(Call(tuple(argv), stdin, timeout, check, new_session))
        returncode, stdout = self.replies.get(tuple(argv), (0, self.stdout))
        assert returncode == 0 or not check, "a real runner would raise CommandFailed"
        return CommandResult(tuple(argv), returncode, stdout, "")


# --- keys -------------------------------------------------------------------------------


def test_known_key_pair() -> None:
    assert public_key_of(PRIVATE) == PUBLIC


def test_generate_keypair_is_clamped() -> None:
    pairs = [generate_keypair() for _ in range(64)]
    assert len({pair.private_key for pair in pairs}) == len(pairs)
    for pair in pairs:
        raw = base64.b64decode(pair.private_key)
        assert len(raw) == 32
        assert raw[0] & 7 == 0
        assert raw[31] & 0x80 == 0
        assert raw[31] & 0x40 == 0x40
        assert pair.public_key == public_key_of(pair.private_key)


@pytest.mark.skipif(shutil.which("wg") is None, reason="`wg` (wireguard-tools) is not installed")
def test_public_key_matches_wg_pubkey() -> None:
    pair = generate_keypair()
    result = subprocess.run(
        ["wg", "pubkey"], input=pair.private_key, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == pair.public_key


def test_keypair_repr_hides_private_key() -> None:
    pair = KeyPair(PRIVATE, PUBLIC)
    for text in (repr(pair), str(pair), f"{pair}", repr([pair])):
        assert PRIVATE not in text
        assert PUBLIC in text


@pytest.mark.parametrize("text", [PUBLIC, f"  {PUBLIC}\n"])
def test_normalize_public_key(text: str) -> None:
    assert normalize_public_key(text) == PUBLIC


def test_normalize_public_key_canonicalises_padding_bits() -> None:
    # "…ykw=" and "…ykx=" decode to the same 32 bytes; the stored form is canonical.
    assert normalize_public_key(PUBLIC[:-2] + "x=") == PUBLIC


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not base64!", "is not valid base64"),
        (PUBLIC[:-1], "is not valid base64"),
        ("é" * 44, "is not valid base64"),
        ("", "decodes to 0 bytes instead of 32"),
        (base64.b64encode(bytes(31)).decode(), "decodes to 31 bytes instead of 32"),
        (base64.b64encode(bytes(33)).decode(), "decodes to 33 bytes instead of 32"),
    ],
)
def test_invalid_keys(text: str, problem: str) -> None:
    for function in (decode_key, normalize_public_key, public_key_of):
        with pytest.raises(InvalidKey) as caught:
            function(text)
        assert str(caught.value) == problem
        assert isinstance(caught.value, ValueError)


# --- wg show dump -----------------------------------------------------------------------

DUMP = (
    f"{PRIVATE}\t{PUBLIC}\t51820\toff\n"
    f"{PEER_A}\t(none)\t(none)\tfd00:a0a8:34d:2a00::2/128\t0\t0\t0\toff\n"
    f"{PEER_B}\t(none)\t[2001:db8::7]:41234\tfd00:a0a8:34d:2a00::3/128,10.9.0.0/16"
    "\t1700000000\t1234\t5678\t25\n"
)


def test_parse_dump() -> None:
    dump = parse_dump(DUMP)
    assert dump == InterfaceDump(
        public_key=PUBLIC,
        listen_port=51820,
        peers={
            PEER_A: PeerStatus(PEER_A, None, "fd00:a0a8:34d:2a00::2/128", 0),
            PEER_B: PeerStatus(
                PEER_B,
                "[2001:db8::7]:41234",
                "fd00:a0a8:34d:2a00::3/128,10.9.0.0/16",
                1700000000,
            ),
        },
    )
    assert dump.peers[PEER_A].latest_handshake is None
    assert dump.peers[PEER_B].latest_handshake == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert PRIVATE not in repr(dump)


def test_parse_dump_without_peers_or_allowed_ips() -> None:
    assert parse_dump(f"{PRIVATE}\t{PUBLIC}\t51820\toff\n").peers == {}
    line = f"{PEER_A}\t(none)\t(none)\t(none)\t0\t0\t0\toff"
    dump = parse_dump(f"{PRIVATE}\t{PUBLIC}\t51820\toff\n{line}\n\n")
    assert dump.peers[PEER_A].allowed_ips == ""


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty wg dump"),
        ("\n\n", "empty wg dump"),
        (f"{PRIVATE}\t{PUBLIC}\t51820\n", "the first line of the wg dump does not have 4 fields"),
        (
            f"{PRIVATE}\t{PUBLIC}\t51820\toff\n{PEER_A}\t(none)\t(none)\tfd00::2/128\t0\t0\t0\n",
            "line 2 of the wg dump does not have 8 fields",
        ),
        (f"{PRIVATE}\t{PUBLIC}\tport\toff\n", "invalid literal for int"),
        (
            f"{PRIVATE}\t{PUBLIC}\t1\toff\n{PEER_A}\t(none)\t(none)\t(none)\tsoon\t0\t0\toff\n",
            "invalid literal for int",
        ),
        ("unable to access interface: No such device\n", "does not have 4 fields"),
    ],
)
def test_parse_dump_rejects_malformed(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as caught:
        parse_dump(text)
    assert PRIVATE not in str(caught.value)


# --- config files -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (render_server_config(PRIVATE, fleet()), PRIVATE),
        (f"[Interface]\nprivatekey={PRIVATE}\n", PRIVATE),
        (f"[Interface]\n  PrivateKey   =   {PRIVATE}  \nListenPort = 1\n", PRIVATE),
        ("[Interface]\nPrivateKey = not-a-key\n", None),
        ("[Interface]\nListenPort = 51820\n", None),
        ("", None),
    ],
)
def test_read_private_key(text: str, key: str | None) -> None:
    assert read_private_key(text) == key


def test_render_server_config() -> None:
    assert render_server_config(PRIVATE, fleet()) == (
        "# Written by wg-fleet. Peers are kept in wg-fleet's database, not here.\n"
        "[Interface]\n"
        f"PrivateKey = {PRIVATE}\n"
        "Address = fd00:a0a8:34d:2a00::1/64\n"
        "ListenPort = 51820\n"
    )


def test_render_peers() -> None:
    peers = [(PEER_A, IPv6Address("fd00::2")), (PEER_B, IPv6Address("fd00::a:3"))]
    assert render_peers(peers) == (
        f"[Peer]\nPublicKey = {PEER_A}\nAllowedIPs = fd00::2/128\n\n"
        f"[Peer]\nPublicKey = {PEER_B}\nAllowedIPs = fd00::a:3/128\n\n"
    )
    assert render_peers([]) == ""


CLIENT = IPv6Address("fd00:a0a8:34d:2a00::1234")


def test_render_client_config_with_private_key() -> None:
    text = render_client_config(
        private_key=PRIVATE, address=CLIENT, server_public_key=PUBLIC, fleet=fleet()
    )
    assert text == (
        "[Interface]\n"
        f"PrivateKey = {PRIVATE}\n"
        "Address = fd00:a0a8:34d:2a00::1234/128\n"
        "\n"
        "[Peer]\n"
        f"PublicKey = {PUBLIC}\n"
        "Endpoint = 1.2.3.4:51820\n"
        "AllowedIPs = fd00:a0a8:34d:2a00::1/128\n"
        "PersistentKeepalive = 25\n"
    )


def test_render_client_config_without_private_key_ipv6_no_keepalive() -> None:
    settings = fleet(
        external_ip="2001:db8::1",
        persistent_keepalive=0,
        allowed_ips=["fd00:a0a8:34d:2a00::/64", "10.0.0.0/8"],
    )
    text = render_client_config(
        private_key=None, address=CLIENT, server_public_key=PUBLIC, fleet=settings
    )
    assert text == (
        "[Interface]\n"
        "Address = fd00:a0a8:34d:2a00::1234/128\n"
        "\n"
        "[Peer]\n"
        f"PublicKey = {PUBLIC}\n"
        "Endpoint = [2001:db8::1]:51820\n"
        "AllowedIPs = fd00:a0a8:34d:2a00::/64, 10.0.0.0/8\n"
    )


# --- WireGuard: server config -----------------------------------------------------------


async def test_ensure_server_config_creates_key_once(tmp_path: Path) -> None:
    wg = WireGuard(FakeRunner(), tmp_path / "wireguard")
    path = wg.config_path("southeast")
    assert path == tmp_path / "wireguard" / "wg_southeast.conf"

    public = await wg.ensure_server_config("southeast", fleet())
    assert path.stat().st_mode & 0o777 == 0o600
    private = read_private_key(path.read_text(encoding="utf-8"))
    assert private is not None
    assert public == public_key_of(private)
    assert path.read_text(encoding="utf-8") == render_server_config(private, fleet())

    before = path.stat()
    assert await wg.ensure_server_config("southeast", fleet()) == public
    assert path.stat().st_ino == before.st_ino


async def test_ensure_server_config_follows_port_and_keeps_key(tmp_path: Path) -> None:
    wg = WireGuard(FakeRunner(), tmp_path)
    path = wg.config_path("southeast")
    path.write_text(render_server_config(PRIVATE, fleet()), encoding="utf-8")
    path.chmod(0o644)

    assert await wg.ensure_server_config("southeast", fleet(port=51999)) == PUBLIC
    assert path.read_text(encoding="utf-8") == render_server_config(PRIVATE, fleet(port=51999))
    assert "ListenPort = 51999\n" in path.read_text(encoding="utf-8")
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("text", ["[Interface]\nPrivateKey = garbage\n", "[Interface]\n"])
async def test_ensure_server_config_refuses_invalid_key(tmp_path: Path, text: str) -> None:
    wg = WireGuard(FakeRunner(), tmp_path)
    path = wg.config_path("southeast")
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RuntimeError) as caught:
        await wg.ensure_server_config("southeast", fleet())
    assert str(caught.value) == f"{path} has no valid PrivateKey; fix or remove the file"
    assert path.read_text(encoding="utf-8") == text


async def test_a_lost_config_file_takes_the_running_interface_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The file is gone but the interface still runs: its key is kept, read from `wg`'s
    stdout (never an argv), and the file written again, 0600."""
    show = ("wg", "show", "wg_southeast", "private-key")
    runner = FakeRunner(replies={show: (0, f"{PRIVATE}\n")})
    wg = WireGuard(runner, tmp_path / "wireguard")
    with caplog.at_level(logging.DEBUG):
        assert await wg.ensure_server_config("southeast", fleet(), has_clients=True) == PUBLIC
    path = wg.config_path("southeast")
    assert path.read_text(encoding="utf-8") == render_server_config(PRIVATE, fleet())
    assert path.stat().st_mode & 0o777 == 0o600
    assert [call.argv for call in runner.calls] == [show]
    assert all(PRIVATE not in " ".join(call.argv) for call in runner.calls)
    assert PRIVATE not in caplog.text
    assert "took the key of the running interface wg_southeast" in caplog.text
    assert "key change" not in caplog.text


@pytest.mark.parametrize("has_clients", [True, False])
async def test_only_with_file_and_interface_gone_is_a_new_key_made(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, has_clients: bool
) -> None:
    show = ("wg", "show", "wg_southeast", "private-key")
    runner = FakeRunner(replies={show: (1, "")})
    wg = WireGuard(runner, tmp_path)
    with caplog.at_level(logging.INFO):
        public = await wg.ensure_server_config("southeast", fleet(), has_clients=has_clients)
    assert public != PUBLIC
    changes = [r for r in caplog.records if "key change" in r.getMessage()]
    if has_clients:  # a key its clients knew is lost: said loudly
        assert [r.levelno for r in changes] == [logging.WARNING]
        assert public in changes[0].getMessage()
        assert "must register again" in changes[0].getMessage()
    else:  # a first start
        assert changes == []
        assert f"generated a key pair for wg_southeast in {wg.config_path('southeast')}" in (
            caplog.text
        )


# --- WireGuard: commands ----------------------------------------------------------------


async def test_add_peers_uses_stdin(tmp_path: Path) -> None:
    runner = FakeRunner()
    peers = [(PEER_A, IPv6Address("fd00::2")), (PEER_B, IPv6Address("fd00::3"))]
    await WireGuard(runner, tmp_path).add_peers("x", peers)
    assert len(runner.calls) == 1
    call = runner.calls[0]
    assert call.argv == ("wg", "addconf", "wg_x", "/dev/stdin")
    assert call.stdin == render_peers(peers)
    assert call.check


async def test_remove_peers_in_chunks(tmp_path: Path) -> None:
    runner = FakeRunner()
    keys = [base64.b64encode(n.to_bytes(32, "big")).decode() for n in range(2500)]
    await WireGuard(runner, tmp_path).remove_peers("x", keys)
    assert REMOVE_CHUNK == 1000
    assert len(runner.calls) == 3
    removed: list[str] = []
    for call, size in zip(runner.calls, (1000, 1000, 500), strict=True):
        assert call.argv[:3] == ("wg", "set", "wg_x")
        triples = call.argv[3:]
        assert len(triples) == 3 * size
        assert triples[0::3] == ("peer",) * size
        assert triples[2::3] == ("remove",) * size
        removed += triples[1::3]
    assert removed == keys


async def test_empty_lists_run_nothing(tmp_path: Path) -> None:
    runner = FakeRunner()
    wg = WireGuard(runner, tmp_path)
    await wg.add_peers("x", [])
    await wg.remove_peers("x", [])
    assert runner.calls == []


async def test_dump(tmp_path: Path) -> None:
    runner = FakeRunner(stdout=DUMP)
    dump = await WireGuard(runner, tmp_path).dump("x")
    assert [call.argv for call in runner.calls] == [("wg", "show", "wg_x", "dump")]
    assert dump == parse_dump(DUMP)


SHOW = ("ip", "link", "show", "dev", "wg_x")
SHOW_ONE_LINE = ("ip", "-o", "link", "show", "dev", "wg_x")
LINK = "5: wg_x: <{flags}> mtu 1420 qdisc noqueue state UNKNOWN mode DEFAULT group default\\"


async def test_bring_up_missing_interface_uses_wg_quick(tmp_path: Path) -> None:
    runner = FakeRunner(replies={SHOW: (1, "")})
    await WireGuard(runner, tmp_path).bring_up("x")
    assert [call.argv for call in runner.calls] == [
        SHOW,
        ("wg-quick", "up", str(tmp_path / "wg_x.conf")),
    ]
    assert runner.calls[1].new_session
    assert not runner.calls[0].check


async def test_bring_up_existing_interface_sets_link_up(tmp_path: Path) -> None:
    runner = FakeRunner(replies={SHOW: (0, LINK.format(flags="POINTOPOINT,NOARP"))})
    await WireGuard(runner, tmp_path).bring_up("x")
    assert [call.argv for call in runner.calls] == [
        SHOW,
        ("ip", "link", "set", "up", "dev", "wg_x"),
    ]
    assert not runner.calls[1].new_session


@pytest.mark.parametrize(
    ("returncode", "stdout", "up"),
    [
        (0, LINK.format(flags="POINTOPOINT,NOARP,UP,LOWER_UP"), True),
        (0, LINK.format(flags="POINTOPOINT,NOARP,UP"), True),
        (0, LINK.format(flags="POINTOPOINT,NOARP"), False),
        (0, LINK.format(flags="POINTOPOINT,NOARP,LOWER_UP"), False),
        (1, "", False),
    ],
)
async def test_is_up(tmp_path: Path, returncode: int, stdout: str, up: bool) -> None:
    runner = FakeRunner(replies={SHOW_ONE_LINE: (returncode, stdout)})
    assert await WireGuard(runner, tmp_path).is_up("x") is up
    assert [call.argv for call in runner.calls] == [SHOW_ONE_LINE]


# --- WireGuard: link state and repairs -----------------------------------------------------


def test_parse_link_reads_flags_and_ipv6_addresses() -> None:
    text = (
        '[{"ifindex": 7, "ifname": "wg_alpha", "flags": ["POINTOPOINT", "NOARP", "UP", '
        '"LOWER_UP"], "addr_info": [{"family": "inet", "local": "10.0.0.1", "prefixlen": 24}, '
        '{"family": "inet6", "local": "fd00:1::1", "prefixlen": 64}]}]'
    )
    assert parse_link(text) == LinkState(True, frozenset({IPv6Interface("fd00:1::1/64")}))
    down = '[{"ifname": "wg_alpha", "flags": ["POINTOPOINT", "NOARP"], "addr_info": []}]'
    assert parse_link(down) == LinkState(False, frozenset())


@pytest.mark.parametrize(
    "text", ["", "[]", "{}", "not json", '[{"addr_info": [{"family": "inet6"}]}]']
)
def test_parse_link_refuses_other_shapes(text: str) -> None:
    with pytest.raises(ValueError, match="ip -j addr show"):
        parse_link(text)


async def test_link_of_a_missing_interface_is_none(tmp_path: Path) -> None:
    argv = ("ip", "-j", "addr", "show", "dev", "wg_x")
    runner = FakeRunner(replies={argv: (1, "")})
    assert await WireGuard(runner, tmp_path).link("x") is None


async def test_the_private_key_travels_on_stdin_only(tmp_path: Path) -> None:
    runner = FakeRunner()
    await WireGuard(runner, tmp_path).set_private_key("x", PRIVATE)
    (call,) = runner.calls
    assert call.argv == ("wg", "set", "wg_x", "private-key", "/dev/stdin")
    assert call.stdin == f"{PRIVATE}\n"


async def test_allowed_ips_are_set_in_place_in_bulk(tmp_path: Path) -> None:
    runner = FakeRunner()
    wireguard = WireGuard(runner, tmp_path)
    await wireguard.set_allowed_ips("x", [(PEER_A, "fd00::a"), (PEER_B, "fd00::b")])
    (call,) = runner.calls
    assert call.argv[:3] == ("wg", "set", "wg_x")
    assert call.argv[3:] == (
        *("peer", PEER_A, "allowed-ips", "fd00::a/128"),
        *("peer", PEER_B, "allowed-ips", "fd00::b/128"),
    )
    runner.calls.clear()
    await wireguard.set_allowed_ips("x", [])
    assert runner.calls == []
