"""A misbehaving `wg`, run for real: shell-script stand-ins for wg, wg-quick and ip put
first on PATH and driven through the real `command.CommandRunner`.

Each fault must end in a clear answer (503 with a sentence), leave nothing half-done
(no row without a peer, no peer without a row), keep the event loop answering and be
counted in `wg_fleet_command_failures_total`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import pytest
from sqlalchemy import select

from command import CommandRunner
from config import Config
from database import Client
from main import create_app
from pruning import sweep_all
from status import StatusCache
from tests.conftest import FLEET, Running
from tests.fakes import FakeClock
from wireguard import generate_keypair

T = TypeVar("T")

WG_UNAVAILABLE = "WireGuard could not add the peer; nothing was registered. Try again later."
INTERFACE = f"wg_{FLEET}"

# Behaviour is chosen by files in $FAKE_WG_STATE: `addconf.mode` (ok, fail, hang or
# partial) and `dump.<if>` (printed instead of a real dump). An interface exists while
# `up.<if>` does (wg-quick makes it from the config: `private.<if>`, `public.<if>`,
# `port.<if>`, `addr.<if>`). Peers live in `peers.<if>`, one dump line each; every call
# is appended to `calls`. Public keys are derived with the real `wg pubkey`.
FAKE_WG = r"""#!/bin/sh
PATH=/usr/bin:/bin
state=$FAKE_WG_STATE
printf '%s\n' "$*" >> "$state/calls"
case "$1" in
pubkey)
    exec /usr/bin/wg pubkey ;;
show)
    if [ ! -e "$state/up.$2" ]; then
        echo "Unable to access interface: No such device" >&2
        exit 1
    fi
    if [ "$3" = private-key ]; then cat "$state/private.$2"; exit 0; fi
    if [ -e "$state/dump.$2" ]; then cat "$state/dump.$2"; exit 0; fi
    printf 'private-key-of-the-fake\t%s\t%s\toff\n' "$(cat "$state/public.$2")" \
        "$(cat "$state/port.$2")"
    cat "$state/peers.$2" 2>/dev/null || true
    ;;
addconf)
    mode=$(cat "$state/addconf.mode" 2>/dev/null || echo ok)
    case "$mode" in
    fail)
        echo "Unable to modify interface: Operation not permitted" >&2
        exit 1 ;;
    hang)
        sleep 30 &
        echo "$$ $!" > "$state/hang.pids"
        wait
        exit 0 ;;
    esac
    awk '/^PublicKey/ {key = $3} /^AllowedIPs/ {
        print key "\t(none)\t(none)\t" $3 "\t0\t0\t0\toff"
        if (partial) exit
    }' partial="$([ "$mode" = partial ] && echo 1)" >> "$state/peers.$2"
    if [ "$mode" = partial ]; then
        echo "Unable to modify interface: No space left on device" >&2
        exit 1
    fi
    ;;
set)
    interface=$2
    shift 2
    while [ $# -ge 2 ]; do
        case "$1" in
        listen-port)
            echo "$2" > "$state/port.$interface"; shift 2 ;;
        private-key)
            cat > "$state/private.$interface"
            /usr/bin/wg pubkey < "$state/private.$interface" > "$state/public.$interface"
            shift 2 ;;
        peer)
            key=$2
            grep -v "^$key	" "$state/peers.$interface" > "$state/peers.new" 2>/dev/null
            if [ "$3" = allowed-ips ]; then
                printf '%s\t(none)\t(none)\t%s\t0\t0\t0\toff\n' "$key" "$4" >> "$state/peers.new"
                shift
            fi
            mv "$state/peers.new" "$state/peers.$interface"
            shift 3 ;;
        *)
            echo "fake wg: unexpected arguments to set: $*" >&2
            exit 1 ;;
        esac
    done
    ;;
*)
    echo "fake wg: unexpected arguments: $*" >&2
    exit 1 ;;
esac
"""

FAKE_IP = r"""#!/bin/sh
PATH=/usr/bin:/bin
state=$FAKE_WG_STATE
printf 'ip %s\n' "$*" >> "$state/calls"
eval interface=\${$#}
case "$*" in
"-o link show dev "*|"link show dev "*|"-j addr show dev "*)
    if [ ! -e "$state/up.$interface" ]; then
        echo "Device \"$interface\" does not exist." >&2
        exit 1
    fi
    if [ "$1" = -j ]; then
        printf '[{"ifname": "%s", "flags": ["POINTOPOINT", "NOARP", "UP"], "addr_info": [' \
            "$interface"
        sep=""
        while IFS=/ read -r local length; do
            printf '%s{"family": "inet6", "local": "%s", "prefixlen": %s}' "$sep" "$local" "$length"
            sep=", "
        done < "$state/addr.$interface"
        printf ']}]\n'
    else
        echo "7: $interface: <POINTOPOINT,NOARP,UP,LOWER_UP> mtu 1420 qdisc noqueue state UNKNOWN"
    fi
    ;;
"link set up dev "*) ;;
"-6 addr add "*)
    echo "$4" >> "$state/addr.$interface" ;;
*)
    echo "fake ip: unexpected arguments: $*" >&2
    exit 1 ;;
esac
"""

FAKE_WG_QUICK = r"""#!/bin/sh
PATH=/usr/bin:/bin
state=$FAKE_WG_STATE
printf 'wg-quick %s\n' "$*" >> "$state/calls"
interface=$(basename "$2" .conf)
value() { sed -n "s/^$1 = //p" "$2"; }
value PrivateKey "$2" > "$state/private.$interface"
/usr/bin/wg pubkey < "$state/private.$interface" > "$state/public.$interface"
value ListenPort "$2" > "$state/port.$interface"
value Address "$2" > "$state/addr.$interface"
: > "$state/peers.$interface"
touch "$state/up.$interface"
"""


class FakeBinaries:
    """The fake wg, ip and wg-quick, and the state they share."""

    def __init__(self, directory: Path) -> None:
        self.bin = directory / "bin"
        self.state = directory / "state"
        self.bin.mkdir(parents=True)
        self.state.mkdir()
        for name, text in (("wg", FAKE_WG), ("ip", FAKE_IP), ("wg-quick", FAKE_WG_QUICK)):
            script = self.bin / name
            script.write_text(text)
            script.chmod(0o755)

    def addconf(self, mode: str) -> None:
        (self.state / "addconf.mode").write_text(mode)

    def dump_prints(self, interface: str, output: bytes) -> None:
        (self.state / f"dump.{interface}").write_bytes(output)

    def take_down(self, interface: str) -> None:
        """As if someone deleted the interface: gone, and its peers with it."""
        (self.state / f"up.{interface}").unlink()
        (self.state / f"peers.{interface}").write_text("")

    def peers(self, interface: str) -> dict[str, str]:
        """Public key → allowed IPs, as the fake interface holds them."""
        try:
            text = (self.state / f"peers.{interface}").read_text()
        except FileNotFoundError:
            return {}
        return {line.split("\t")[0]: line.split("\t")[3] for line in text.splitlines() if line}

    def calls(self) -> list[str]:
        try:
            return (self.state / "calls").read_text().splitlines()
        except FileNotFoundError:
            return []

    def hang_pids(self) -> list[int] | None:
        try:
            return [int(pid) for pid in (self.state / "hang.pids").read_text().split()]
        except (FileNotFoundError, ValueError):
            return None


@pytest.fixture
def fake_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeBinaries:
    fakes = FakeBinaries(tmp_path / "fakes")
    monkeypatch.setenv("PATH", f"{fakes.bin}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_WG_STATE", str(fakes.state))
    return fakes


@asynccontextmanager
async def real_runner_app(config: Config, clock: FakeClock) -> AsyncIterator[Running]:
    """The app with the real CommandRunner, its lifespan entered."""
    app = create_app(config, runner=CommandRunner(), clock=clock)
    async with app.router.lifespan_context(app):
        yield Running(app)


async def poll(condition: Callable[[], T | None], timeout: float, what: str) -> T:
    """Await until `condition()` is truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.01)


async def within(awaitable: Awaitable[T], seconds: float) -> T:
    return await asyncio.wait_for(awaitable, seconds)


async def stored(running: Running) -> list[tuple[str, str]]:
    return await running.context.database.read(
        lambda session: [
            (row.public_key, row.address)
            for row in session.scalars(select(Client).where(Client.fleet == FLEET))
        ]
    )


async def command_failures(running: Running, command: str = "wg") -> float:
    async with running.client() as http:
        text = (await http.get("/metrics")).text
    prefix = f'wg_fleet_command_failures_total{{command="{command}"}} '
    values = [
        float(line.removeprefix(prefix)) for line in text.splitlines() if line.startswith(prefix)
    ]
    return values[0] if values else 0.0


def is_gone(pid: int) -> bool:
    """Whether `pid` no longer runs (absent, or a zombie nobody has reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in {"Z", "X"}


async def test_the_fakes_work_through_the_real_runner(
    fake_bin: FakeBinaries, make_config: Callable[..., Config], clock: FakeClock
) -> None:
    """The baseline the fault tests depend on: start-up, register and ping all succeed."""
    async with real_runner_app(make_config(), clock) as running:
        async with running.client() as http:
            answer = (await http.post(f"/fleet/{FLEET}/register")).json()
        async with running.in_tunnel(answer["address"]) as http:
            pinged = await http.post(f"/fleet/{FLEET}/ping", json={"hostname": "excavator"})
        rows = await stored(running)
        failures = await command_failures(running)
    assert pinged.json()["hostname"] == "excavator"
    assert rows == [(answer["public_key"], answer["address"])]
    assert fake_bin.peers(INTERFACE) == {answer["public_key"]: f"{answer['address']}/128"}
    assert any(call.startswith("addconf wg_alpha /dev/stdin") for call in fake_bin.calls())
    assert failures == 0


async def test_wg_addconf_failing_answers_503_and_leaves_nothing_behind(
    fake_bin: FakeBinaries, make_config: Callable[..., Config], clock: FakeClock
) -> None:
    own = generate_keypair()
    async with real_runner_app(make_config(), clock) as running:
        async with running.client() as http:
            kept = (await http.post(f"/fleet/{FLEET}/register")).json()
            fake_bin.addconf("fail")
            single = await http.post(f"/fleet/{FLEET}/register")
            batch = await asyncio.gather(
                *(http.post(f"/fleet/{FLEET}/register") for _ in range(8)),
                http.post(f"/fleet/{FLEET}/register", json={"public_key": own.public_key}),
            )
            # An existing client re-registering while wg fails keeps its registration.
            again = await http.post(
                f"/fleet/{FLEET}/register", json={"public_key": kept["public_key"]}
            )
        rows = await stored(running)
        failures = await command_failures(running)

    for response in (single, *batch):
        assert response.status_code == 503
        assert response.json() == {"detail": WG_UNAVAILABLE}
    assert again.status_code == 503
    assert rows == [(kept["public_key"], kept["address"])]
    assert fake_bin.peers(INTERFACE) == {kept["public_key"]: f"{kept['address']}/128"}
    assert failures >= 3  # single, the batch (one or more addconf calls) and again


async def test_wg_addconf_failing_half_way_leaves_no_peer_behind(
    fake_bin: FakeBinaries, make_config: Callable[..., Config], clock: FakeClock
) -> None:
    """`wg addconf` may apply some peers before it fails (the kernel and wireguard-go
    apply a configuration peer by peer). The client got 503 and its row is deleted, so
    its peer must go too: otherwise the interface holds a peer the database does not
    know, on an address the database considers free, until the next pass."""
    async with real_runner_app(make_config(), clock) as running:
        fake_bin.addconf("partial")
        async with running.client() as http:
            answers = await asyncio.gather(
                *(http.post(f"/fleet/{FLEET}/register") for _ in range(4))
            )
        rows = await stored(running)
    assert {answer.status_code for answer in answers} == {503}
    assert rows == []
    assert fake_bin.peers(INTERFACE) == {}


async def test_wg_missing_answers_503_and_is_counted(
    fake_bin: FakeBinaries,
    make_config: Callable[..., Config],
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with real_runner_app(make_config(), clock) as running:
        (fake_bin.bin / "wg").rename(fake_bin.bin / "wg.removed")
        # Only the fakes' directory on PATH, so that no real wg is found either.
        monkeypatch.setenv("PATH", str(fake_bin.bin))
        async with running.client() as http:
            response = await http.post(f"/fleet/{FLEET}/register")
        rows = await stored(running)
        failures = await command_failures(running)
    assert response.status_code == 503
    assert response.json() == {"detail": WG_UNAVAILABLE}
    assert rows == []
    assert failures >= 1


async def test_a_hanging_wg_is_killed_and_the_loop_keeps_answering(
    fake_bin: FakeBinaries, make_config: Callable[..., Config], clock: FakeClock
) -> None:
    async with real_runner_app(make_config(), clock) as running:
        running.context.wireguard.timeout = 0.5  # add_peers gets four times it: 2 s
        running.context.status = StatusCache(running.context.wireguard, ttl=0)
        fake_bin.addconf("hang")
        async with running.client() as http:
            started = time.monotonic()
            registering = asyncio.create_task(http.post(f"/fleet/{FLEET}/register"))
            pids = await poll(fake_bin.hang_pids, 5, "wg addconf to hang")
            # While wg hangs, other requests are answered at once.
            health = await within(http.get("/health"), 1.5)
            fleets = await within(http.get("/api/fleets"), 1.5)
            assert not registering.done()
            response = await within(registering, 10)
            elapsed = time.monotonic() - started
        rows = await stored(running)
        failures = await command_failures(running)

    assert (health.status_code, health.json()) == (200, {"status": "pass"})
    assert fleets.status_code == 200
    assert response.status_code == 503
    assert response.json() == {"detail": WG_UNAVAILABLE}
    assert 1.5 < elapsed < 6
    # The wg process and the child it started were killed, not left running.
    assert all(is_gone(pid) for pid in pids), pids
    assert rows == []
    assert fake_bin.peers(INTERFACE) == {}
    assert failures == 1


GARBAGE_DUMPS = {
    "prose": b"interface: wg_alpha\n  public key: (hidden)\n",
    "empty": b"",
    "short peer line": b"priv\tpub\t51820\toff\nkey\t(none)\n",
    "words for numbers": b"priv\tpub\tport\toff\n",
    "handshake not a number": b"priv\tpub\t51820\toff\nk=\t(none)\t(none)\tfd00:1::5/128\t"
    b"soon\t0\t0\toff\n",
    "handshake out of range": b"priv\tpub\t51820\toff\nk=\t(none)\t(none)\tfd00:1::5/128\t"
    b"99999999999999999999\t0\t0\toff\n",
    "handshake past year 9999": b"priv\tpub\t51820\toff\nk=\t(none)\t(none)\tfd00:1::5/128\t"
    b"999999999999\t0\t0\toff\n",
    "not UTF-8": b"\xff\xfe\x00\x9c garbage \xc3\x28\n",
}


@pytest.mark.parametrize("output", GARBAGE_DUMPS.values(), ids=GARBAGE_DUMPS.keys())
async def test_a_garbage_dump_fails_the_pass_but_not_the_service(
    output: bytes,
    fake_bin: FakeBinaries,
    make_config: Callable[..., Config],
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with real_runner_app(make_config(), clock) as running:
        async with running.client() as http:
            answer = (await http.post(f"/fleet/{FLEET}/register")).json()
        fake_bin.dump_prints(INTERFACE, output)
        # No cached status: every page below asks wg again.
        running.context.status = StatusCache(running.context.wireguard, ttl=0)
        with caplog.at_level(logging.ERROR, logger="pruning"):
            reports = await sweep_all(running.context)
        async with running.client() as http:
            pages = {
                path: await http.get(path)
                for path in (
                    "/api/fleets",
                    f"/api/fleets/{FLEET}/clients",
                    "/",
                    f"/fleet/{FLEET}",
                    "/metrics",
                    "/health",
                )
            }
        rows = await stored(running)

    assert [report.fleet for report in reports] == ["beta"]  # alpha's pass failed, beta's ran
    errors = [r for r in caplog.records if r.name == "pruning" and r.levelno == logging.ERROR]
    assert [r.getMessage().split(":")[0] for r in errors] == [f"the pass over fleet {FLEET} failed"]
    health = pages.pop("/health")
    for path, page in pages.items():
        assert page.status_code == 200, (path, page.text)
    # The pass could not compare the interface with the database: health says so.
    assert (health.status_code, health.json()) == (
        503,
        {
            "status": "fail",
            "problems": [
                f"the last pass over fleet {FLEET} failed (`wg` printed something unexpected); "
                "see the log"
            ],
        },
    )
    assert pages["/api/fleets"].json()["fleets"][0]["online"] == 0
    assert rows == [(answer["public_key"], answer["address"])]  # nothing pruned or lost
    assert fake_bin.peers(INTERFACE) == {answer["public_key"]: f"{answer['address']}/128"}


async def test_an_interface_deleted_while_running_comes_back_with_its_peers(
    fake_bin: FakeBinaries, make_config: Callable[..., Config], clock: FakeClock
) -> None:
    async with real_runner_app(make_config(), clock) as running, running.client() as http:
        answers = [(await http.post(f"/fleet/{FLEET}/register")).json() for _ in range(3)]
        fake_bin.take_down(INTERFACE)
        assert (await http.get("/health")).status_code == 503
        reports = await sweep_all(running.context)
        health = await http.get("/health")
    alpha = next(report for report in reports if report.fleet == FLEET)
    assert (alpha.brought_up, alpha.restored) == (True, 3)
    assert health.status_code == 200
    assert fake_bin.peers(INTERFACE) == {a["public_key"]: f"{a['address']}/128" for a in answers}
    assert any(call.startswith("wg-quick up ") for call in fake_bin.calls())
