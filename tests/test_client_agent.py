"""client/wg-fleet-client under dash, with fake curl, wg, wg-quick and uname on PATH.

No root and no network: the fakes answer from queues and log every argv, so these tests
check the agent's own logic (options, JSON decoding, config building, when it restarts
the tunnel, recovery, secrets kept out of argv). tests/e2e/test_client_agent.py runs it
for real.
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "client" / "wg-fleet-client"
DASH = shutil.which("dash")
SERVER = "http://server.test:8000"
FLEET = "south"
SERVER_KEY = "S" * 43 + "="
OTHER_SERVER_KEY = "T" * 43 + "="

pytestmark = pytest.mark.skipif(
    DASH is None, reason="the agent is tested with dash (apt install dash)"
)

FAKE_CURL = r"""#!/bin/sh
{ printf 'curl'; for a in "$@"; do printf ' %s' "$a"; done; echo; } >>"$FAKE/argv.log"
out=; url=; data=
while [ $# -gt 0 ]; do
	case $1 in
	-o) out=$2; shift 2 ;;
	-w | --connect-timeout | --max-time | -X | --noproxy) shift 2 ;;
	-H) case $2 in @*) cat "${2#@}" >>"$FAKE/headers.log" ;; esac; shift 2 ;;
	--data-binary) data=$2; shift 2 ;;
	http*) url=$1; shift ;;
	*) shift ;;
	esac
done
case $url in */register) kind=register ;; */ping) kind=ping ;; *) kind=other ;; esac
printf '%s %s %s\n' "$kind" "$url" "$data" >>"$FAKE/requests.log"
queue=$FAKE/$kind.queue
line=$(head -n 1 "$queue")
if [ "$(wc -l <"$queue")" -gt 1 ]; then
	tail -n +2 "$queue" >"$queue.tmp"
	mv "$queue.tmp" "$queue"
fi
status=${line%% *}
if [ "$status" = 000 ]; then
	echo "curl: (28) Connection timed out after 10001 milliseconds" >&2
	printf 000
	exit 28
fi
printf '%s' "${line#* }" >"$out"
printf '%s' "$status"
"""

FAKE_WG = r"""#!/bin/sh
{ printf 'wg'; for a in "$@"; do printf ' %s' "$a"; done; echo; } >>"$FAKE/argv.log"
case $1 in
genkey)
	n=$(cat "$FAKE/keys" 2>/dev/null || echo 0); n=$((n + 1)); echo "$n" >"$FAKE/keys"
	printf 'k%042d=\n' "$n" ;;
pubkey) tr k p ;;
show) [ -e "$FAKE/up-$2" ] ;;
syncconf) cp "$3" "$FAKE/synced.conf" ;;
*) exit 1 ;;
esac
"""

FAKE_WG_QUICK = r"""#!/bin/sh
{ printf 'wg-quick'; for a in "$@"; do printf ' %s' "$a"; done; echo; } >>"$FAKE/argv.log"
name=${2##*/}; name=${name%.conf}
case $1 in
up)
	if [ -e "$FAKE/up-$name" ]; then echo "wg-quick: \`$name' already exists" >&2; exit 1; fi
	if [ -n "${FAKE_WG_QUICK_FAILS:-}" ]; then
		echo "[#] ip link add $name type wireguard" >&2
		echo "$FAKE_WG_QUICK_FAILS" >&2
		exit 1
	fi
	touch "$FAKE/up-$name" ;;
down)
	if [ ! -e "$FAKE/up-$name" ]; then
		echo "wg-quick: \`$name' is not a WireGuard interface" >&2
		exit 1
	fi
	rm "$FAKE/up-$name" ;;
strip) grep -v -E '^(Address|MTU) ' "$2" ;;
esac
"""

FAKE_SYSTEMD_RUN = r"""#!/bin/sh
{ printf 'systemd-run'; for a in "$@"; do printf ' %s' "$a"; done; echo; } >>"$FAKE/argv.log"
while [ $# -gt 0 ]; do case $1 in --*) shift ;; *) break ;; esac; done
exec "$@"
"""

FAKE_UNAME = r"""#!/bin/sh
printf '%s\n' "${FAKE_UNAME:-Test-Host.example.org}"
"""


def server_config(
    address: str = "fd00::1234",
    server_key: str = SERVER_KEY,
    endpoint: str = "198.18.0.1:51823",
    extra: str = "",
) -> str:
    return (
        f"[Interface]\nAddress = {address}/128\n{extra}\n[Peer]\nPublicKey = {server_key}\n"
        f"Endpoint = {endpoint}\nAllowedIPs = fd00::1/128\nPersistentKeepalive = 25\n"
    )


def answer(status: int, body: Any) -> str:
    """One queued answer, compact JSON as Starlette writes it."""
    return f"{status:03d} {json.dumps(body, separators=(',', ':'), ensure_ascii=False)}"


def registered(address: str = "fd00::1234", **config: str) -> str:
    return answer(
        200,
        {
            "status": "success",
            "config": server_config(address, **config),
            "address": address,
            "public_key": "ignored",
        },
    )


def pinged(hostname: str | None = "test-host") -> str:
    fqdn = f"{hostname}.{FLEET}.fleet.test" if hostname else None
    return answer(200, {"status": "ok", "hostname": hostname, "fqdn": fqdn})


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


class Agent:
    def __init__(self, tmp_path: Path) -> None:
        self.fake = tmp_path / "fake"
        self.bin = tmp_path / "bin"
        self.config_dir = tmp_path / "wireguard"
        self.tmp = tmp_path / "tmp"
        for directory in (self.fake, self.bin, self.tmp):
            directory.mkdir()
        for name, text in (
            ("curl", FAKE_CURL),
            ("wg", FAKE_WG),
            ("wg-quick", FAKE_WG_QUICK),
            ("uname", FAKE_UNAME),
            ("systemd-run", FAKE_SYSTEMD_RUN),
        ):
            path = self.bin / name
            path.write_text(text)
            path.chmod(0o755)
        self.interface = "wt0"
        self.conf = self.config_dir / "wt0.conf"
        self.key = self.config_dir / "wt0.key"
        self.state = self.config_dir / "wt0.fleet"
        self.queue("register", registered())
        self.queue("ping", pinged())

    def queue(self, kind: str, *answers: str) -> None:
        (self.fake / f"{kind}.queue").write_text("".join(f"{a}\n" for a in answers))

    def run(self, *args: str, env: dict[str, str] | None = None, where: bool = True) -> Result:
        argv = [str(DASH), str(SCRIPT), *args]
        if where:
            argv += ["--interface", self.interface, "--config-dir", str(self.config_dir)]
        environment = {
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "FAKE": str(self.fake),
            "TMPDIR": str(self.tmp),
            **(env or {}),
        }
        result = subprocess.run(
            argv, capture_output=True, text=True, env=environment, timeout=60, check=False
        )
        return Result(result.returncode, result.stdout, result.stderr)

    def up(self, *args: str, env: dict[str, str] | None = None) -> Result:
        return self.run("up", "--server", SERVER, "--fleet", FLEET, *args, env=env)

    def log(self, name: str = "argv.log") -> list[str]:
        path = self.fake / name
        return path.read_text().splitlines() if path.exists() else []

    def tunnel_calls(self) -> list[str]:
        """wg-quick up/down and wg syncconf calls, with the interface name only."""
        calls = []
        for line in self.log():
            words = line.split()
            if words[0] == "wg-quick" and words[1] in ("up", "down"):
                calls.append(f"wg-quick {words[1]} {Path(words[2]).stem}")
            elif words[:2] == ["wg", "syncconf"]:
                calls.append(f"wg syncconf {words[2]}")
        return calls

    def clear_logs(self) -> None:
        for name in ("argv.log", "requests.log", "headers.log"):
            (self.fake / name).unlink(missing_ok=True)

    def requests(self) -> list[list[str]]:
        return [line.split(" ", 2) for line in self.log("requests.log")]

    def private_key(self) -> str:
        return self.key.read_text().strip()

    def is_up(self) -> bool:
        return (self.fake / f"up-{self.interface}").exists()


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    return Agent(tmp_path)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def one_sentence(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("wg-fleet-client: "), stderr
    return lines[0]


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["up"],
        ["up", "--server", SERVER],
        ["up", "--fleet", FLEET],
        ["up", "--server", "ftp://x", "--fleet", FLEET],
        ["up", "--server", "http://x y", "--fleet", FLEET],
        ["up", "--server", "http://x:port", "--fleet", FLEET],
        ["up", "--server", SERVER, "--fleet", "South"],
        ["up", "--server", SERVER, "--fleet", "much-too-long-fleet"],
        ["up", "--server", SERVER, "--fleet", FLEET, "--hostname", "Not Valid"],
        ["up", "--server", SERVER, "--fleet", FLEET, "--interface", "a-much-too-long-if"],
        ["up", "--server", SERVER, "--fleet", FLEET, "--bogus"],
        ["up", "--server"],
        ["up", "--server", ""],
        ["down", "--fleet", FLEET],
    ],
)
def test_usage_errors_exit_2_with_one_sentence_and_touch_nothing(
    agent: Agent, argv: list[str]
) -> None:
    result = agent.run(*argv, "--config-dir", str(agent.config_dir), where=False)
    assert result.code == 2, result
    assert "--help" in one_sentence(result.stderr)
    assert not agent.config_dir.exists()
    assert agent.log() == []


def test_help(agent: Agent) -> None:
    result = agent.run("--help", where=False)
    assert result.code == 0
    assert "wg-fleet-client up" in result.stdout


def test_up_registers_only_the_public_key_and_writes_a_private_config(agent: Agent) -> None:
    result = agent.up()
    assert result.code == 0, result
    assert result.stderr == ""
    assert "south as test-host.south.fleet.test" in result.stdout

    key = agent.private_key()
    public = key.replace("k", "p")
    assert agent.conf.read_text() == (
        f"# Written by wg-fleet-client for fleet {FLEET}: edits are overwritten.\n"
        + server_config().replace("[Interface]\n", f"[Interface]\nPrivateKey = {key}\n")
    )
    for path in (agent.config_dir, agent.conf, agent.key, agent.state):
        assert mode(path) & 0o077 == 0, path
    assert agent.requests() == [
        ["register", f"{SERVER}/fleet/{FLEET}/register", f'{{"public_key":"{public}"}}'],
        ["ping", f"http://[fd00::1]:8000/fleet/{FLEET}/ping", '{"hostname":"test-host"}'],
    ]
    assert agent.tunnel_calls() == ["wg-quick up wt0"]
    assert agent.is_up()
    # The private key goes through files and pipes only, never through an argv.
    assert key not in "\n".join(agent.log())
    assert agent.state.read_text().splitlines()[1:3] == [f"server={SERVER}", f"fleet={FLEET}"]
    assert sorted(p.name for p in agent.config_dir.iterdir()) == [
        "wt0.conf",
        "wt0.fleet",
        "wt0.key",
    ]
    assert list(agent.tmp.iterdir()) == []


def test_up_twice_changes_nothing(agent: Agent) -> None:
    assert agent.up("--hostname", "excavator").code == 0
    before = {
        p: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_ino)
        for p in (agent.conf, agent.key, agent.state)
    }
    agent.clear_logs()

    result = agent.up("--hostname", "excavator")
    assert result.code == 0, result
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_ino) for p in before}
    assert after == before
    assert agent.tunnel_calls() == []  # neither restarted nor synced
    assert [kind for kind, *_ in agent.requests()] == ["register", "ping"]
    assert "genkey" not in " ".join(agent.log())


def test_default_hostname_is_the_short_name_reduced(agent: Agent) -> None:
    env = {"FAKE_UNAME": "Build.Box_7+Test.example.org"}
    assert agent.up(env=env).code == 0
    assert agent.requests()[-1][2] == '{"hostname":"build"}'
    long = "X" * 70 + "!y"
    agent.clear_logs()
    assert agent.run("ping", env={"FAKE_UNAME": long}).code == 0
    assert agent.requests()[-1][2] == json.dumps({"hostname": "x" * 63}, separators=(",", ":"))
    agent.clear_logs()
    assert agent.run("ping", env={"FAKE_UNAME": "!!!"}).code == 0
    assert agent.requests()[-1][2] == "{}"  # nothing usable: a ping without a name


def test_hostname_given_to_ping_is_remembered(agent: Agent) -> None:
    assert agent.up().code == 0
    assert agent.run("ping", "--hostname", "digger").code == 0
    agent.clear_logs()
    assert agent.run("ping").code == 0
    assert agent.requests() == [
        ["ping", f"http://[fd00::1]:8000/fleet/{FLEET}/ping", '{"hostname":"digger"}']
    ]
    assert "hostname=digger" in agent.state.read_text().splitlines()


def test_ping_alone_uses_the_tunnel_and_registers_nothing(agent: Agent) -> None:
    assert agent.up().code == 0
    agent.clear_logs()
    result = agent.run("ping")
    assert result.code == 0, result
    assert [kind for kind, *_ in agent.requests()] == ["ping"]
    assert agent.tunnel_calls() == []
    ping_argv = next(line for line in agent.log() if line.startswith("curl"))
    assert "--noproxy *" in ping_argv


def test_ping_brings_a_downed_tunnel_back_up(agent: Agent) -> None:
    assert agent.up().code == 0
    assert agent.run("down").code == 0
    assert not agent.is_up()
    agent.clear_logs()
    assert agent.run("ping").code == 0
    assert agent.tunnel_calls() == ["wg-quick up wt0"]


def test_a_wg_quick_failure_is_one_sentence(agent: Agent) -> None:
    result = agent.up(env={"FAKE_WG_QUICK_FAILS": "RTNETLINK answers: Operation not permitted"})
    assert result.code == 1
    assert one_sentence(result.stderr) == (
        "wg-fleet-client: wg-quick up wt0 failed: RTNETLINK answers: Operation not permitted"
    )


def test_under_systemd_the_tunnel_gets_a_scope_of_its_own(agent: Agent) -> None:
    assert agent.up(env={"INVOCATION_ID": "0123"}).code == 0
    (scope,) = [line for line in agent.log() if line.startswith("systemd-run")]
    assert scope.startswith("systemd-run --scope ")
    assert scope.endswith(f"wg-quick up {agent.conf}")
    assert agent.is_up()
    agent.clear_logs()
    assert agent.run("down", env={"INVOCATION_ID": "0123"}).code == 0
    assert agent.tunnel_calls() == ["wg-quick down wt0"]
    assert not any(line.startswith("systemd-run") for line in agent.log())


def test_down_is_fine_when_already_down(agent: Agent) -> None:
    assert agent.up().code == 0
    agent.clear_logs()
    assert agent.run("down").code == 0
    assert agent.run("down").code == 0
    assert agent.tunnel_calls() == ["wg-quick down wt0"]


def test_ping_before_any_up_needs_a_server(agent: Agent) -> None:
    result = agent.run("ping")
    assert result.code == 2
    assert "--server" in one_sentence(result.stderr)


@pytest.mark.parametrize("failure", [answer(404, {"detail": "Unknown client."}), "000"])
def test_ping_registers_the_same_key_again_and_restarts_the_tunnel(
    agent: Agent, failure: str
) -> None:
    assert agent.up().code == 0
    key = agent.private_key()
    agent.clear_logs()
    agent.queue("ping", failure, pinged())
    agent.queue("register", registered("fd00::beef", server_key=OTHER_SERVER_KEY))

    result = agent.run("ping")
    assert result.code == 0, result
    assert "registering again" in result.stdout
    public = key.replace("k", "p")
    assert [r[0] for r in agent.requests()] == ["ping", "register", "ping"]
    assert agent.requests()[1][2] == f'{{"public_key":"{public}"}}'
    assert agent.private_key() == key
    text = agent.conf.read_text()
    assert "Address = fd00::beef/128" in text
    assert f"PublicKey = {OTHER_SERVER_KEY}" in text
    assert f"PrivateKey = {key}" in text
    assert agent.tunnel_calls() == ["wg-quick down wt0", "wg-quick up wt0"]


def test_ping_restarts_the_tunnel_even_when_the_config_is_the_same(agent: Agent) -> None:
    # The server pruned and re-added the peer: only a restart makes it handshake at once.
    assert agent.up().code == 0
    agent.clear_logs()
    agent.queue("ping", "000", pinged())
    before = agent.conf.stat().st_mtime_ns
    assert agent.run("ping").code == 0
    assert agent.conf.stat().st_mtime_ns == before
    assert agent.tunnel_calls() == ["wg-quick down wt0", "wg-quick up wt0"]


def test_ping_gives_up_with_one_sentence_when_the_server_is_unreachable(agent: Agent) -> None:
    assert agent.up().code == 0
    agent.queue("ping", "000")
    agent.queue("register", "000")
    result = agent.run("ping")
    assert result.code == 1
    sentence = one_sentence(result.stderr)
    assert f"could not register at {SERVER}/fleet/{FLEET}/register" in sentence
    assert "Connection timed out" in sentence


def test_ping_still_unanswered_after_registering_again_fails(agent: Agent) -> None:
    assert agent.up().code == 0
    agent.queue("ping", "000")
    result = agent.run("ping")
    assert result.code == 1
    assert "no answer from http://[fd00::1]:8000" in one_sentence(result.stderr)


def test_http_errors_are_one_decoded_sentence(agent: Agent) -> None:
    assert agent.up().code == 0
    detail = 'Pings must come "through"\nthe tunnel \\ of fleet south: fd00::5 is not in fd01::/64.'
    agent.queue("ping", answer(403, {"detail": detail}))
    result = agent.run("ping")
    assert result.code == 1
    assert one_sentence(result.stderr) == (
        f"wg-fleet-client: the server answered 403 to the ping at "
        f"http://[fd00::1]:8000/fleet/{FLEET}/ping: "
        'Pings must come "through" the tunnel \\ of fleet south: fd00::5 is not in fd01::/64.'
    )
    assert [r[0] for r in agent.requests()][-1] == "ping"  # no re-registration on 403


def test_a_422_names_what_is_allowed(agent: Agent) -> None:
    assert agent.up().code == 0
    agent.queue(
        "ping",
        answer(422, {"detail": [{"loc": ["body", "hostname"], "msg": "hostname must be short"}]}),
    )
    result = agent.run("ping")
    assert result.code == 1
    assert one_sentence(result.stderr).endswith(": hostname must be short")


def test_registration_refused_keeps_the_key_for_the_next_try(agent: Agent) -> None:
    agent.queue("register", answer(401, {"detail": "Registration needs the fleet's token."}))
    result = agent.up()
    assert result.code == 1
    assert one_sentence(result.stderr) == (
        f"wg-fleet-client: the server answered 401 to the registration at "
        f"{SERVER}/fleet/{FLEET}/register: Registration needs the fleet's token."
    )
    assert not agent.conf.exists()
    key = agent.private_key()
    agent.queue("register", registered())
    assert agent.up().code == 0
    assert agent.private_key() == key


@pytest.mark.parametrize(
    ("extra", "refused"),
    [
        ("PostUp = touch /tmp/pwned\n", "PostUp"),
        ("DNS = 1.1.1.1\n", "DNS"),
        ("MTU = 1280; reboot\n", "MTU"),
        ("Table = off\n", "Table"),
    ],
)
def test_configs_with_anything_else_are_refused(agent: Agent, extra: str, refused: str) -> None:
    agent.queue(
        "register",
        answer(200, {"status": "success", "config": server_config(extra=extra), "address": "x"}),
    )
    result = agent.up()
    assert result.code == 1
    assert refused in one_sentence(result.stderr)
    assert not agent.conf.exists()
    assert agent.tunnel_calls() == []
    assert sorted(p.name for p in agent.config_dir.iterdir()) == ["wt0.key"]


def test_a_bad_endpoint_or_key_is_refused(agent: Agent) -> None:
    agent.queue("register", registered(endpoint="$(reboot):1"))
    assert "Endpoint" in one_sentence(agent.up().stderr)
    agent.queue("register", registered(server_key="short="))
    assert "PublicKey" in one_sentence(agent.up().stderr)
    agent.queue("register", answer(200, {"status": "success"}))
    assert "holds no config" in one_sentence(agent.up().stderr)


def test_an_ipv6_endpoint_and_an_mtu_are_accepted(agent: Agent) -> None:
    agent.queue("register", registered(endpoint="[2001:db8::1]:51820", extra="MTU = 1380\n"))
    result = agent.up()
    assert result.code == 0, result
    assert "Endpoint = [2001:db8::1]:51820" in agent.conf.read_text()


def test_peer_changes_are_synced_without_cutting_the_tunnel(agent: Agent) -> None:
    assert agent.up().code == 0
    agent.clear_logs()
    agent.queue("register", registered(server_key=OTHER_SERVER_KEY, endpoint="198.18.0.9:51830"))
    assert agent.up().code == 0
    assert agent.tunnel_calls() == ["wg syncconf wt0"]
    synced = (agent.fake / "synced.conf").read_text()
    assert f"PublicKey = {OTHER_SERVER_KEY}" in synced
    assert "Address" not in synced
    assert "Endpoint = 198.18.0.9:51830" in agent.conf.read_text()
    assert list(agent.tmp.iterdir()) == []  # the stripped copy (with the key) is gone


def test_an_address_change_restarts_the_tunnel(agent: Agent) -> None:
    assert agent.up().code == 0
    agent.clear_logs()
    agent.queue("register", registered("fd00::4321"))
    assert agent.up().code == 0
    assert agent.tunnel_calls() == ["wg-quick down wt0", "wg-quick up wt0"]
    assert "Address = fd00::4321/128" in agent.conf.read_text()


def test_the_token_is_sent_from_a_file_and_remembered(agent: Agent) -> None:
    token = "s3cret-token-0123456789"
    assert agent.up(env={"WG_FLEET_TOKEN": token}).code == 0
    assert agent.log("headers.log") == [f"Authorization: Bearer {token}"]
    assert f"token={token}" in agent.state.read_text().splitlines()
    assert mode(agent.state) == 0o600
    # Recovery in a later run, without the variable, still sends it.
    agent.clear_logs()
    agent.queue("ping", "000", pinged())
    assert agent.run("ping").code == 0
    assert agent.log("headers.log") == [f"Authorization: Bearer {token}"]
    assert token not in "\n".join(agent.log())
    # --token replaces it.
    assert agent.up("--token", "another-token-abcdefgh").code == 0
    assert "token=another-token-abcdefgh" in agent.state.read_text().splitlines()


def test_an_existing_private_key_is_adopted(agent: Agent) -> None:
    agent.config_dir.mkdir(mode=0o700)
    key = "k" * 40 + "abc="
    agent.conf.write_text(f"[Interface]\nPrivateKey = {key}\nAddress = fd00::77/128\n")
    assert agent.up().code == 0
    assert agent.private_key() == key
    assert agent.requests()[0][2] == f'{{"public_key":"{key.replace("k", "p")}"}}'


def test_a_new_fleet_or_a_cloned_machine_gets_a_new_key(agent: Agent) -> None:
    assert agent.up().code == 0
    first = agent.private_key()
    # The state says another machine-id: this is a clone of that machine.
    text = agent.state.read_text().splitlines()
    if not any(line.startswith("machine_id=") for line in text):
        pytest.skip("this machine has no /etc/machine-id")
    agent.state.write_text(
        "\n".join(
            f"machine_id={'0123456789abcdef' * 2}" if line.startswith("machine_id=") else line
            for line in text
        )
        + "\n"
    )
    result = agent.up()
    assert result.code == 0, result
    assert "cloned" in result.stdout
    second = agent.private_key()
    assert second != first
    result = agent.run("up", "--server", SERVER, "--fleet", "north")
    assert result.code == 0, result
    assert "fleet changed" in result.stdout
    assert agent.private_key() not in (first, second)
    assert agent.requests()[-1][1] == "http://[fd00::1]:8000/fleet/north/ping"


def test_a_stale_lock_is_taken_over(agent: Agent) -> None:
    agent.config_dir.mkdir(mode=0o700)
    lock = agent.config_dir / ".wt0.lock"
    lock.mkdir()
    (lock / "pid").write_text("4194305\n")  # above the largest pid_max: never alive
    assert agent.up().code == 0
    assert not lock.exists()


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_finds_nothing() -> None:
    result = subprocess.run(
        ["shellcheck", "-s", "sh", str(SCRIPT)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout


def with_routes(allowed_ips: str, extra_peer: str = "") -> str:
    config = (
        f"[Interface]\nAddress = fd00::1234/128\n\n[Peer]\nPublicKey = {SERVER_KEY}\n"
        f"Endpoint = 198.18.0.1:51823\nAllowedIPs = {allowed_ips}\n{extra_peer}"
    )
    return answer(200, {"status": "success", "config": config, "address": "fd00::1234"})


@pytest.mark.parametrize(
    "allowed_ips",
    [
        "0.0.0.0/0",
        "::/0",
        "fd00::1/128, 0.0.0.0/0, ::/0",
        "0.0.0.0/1, 128.0.0.0/1",
        "::/1, 8000::/1",
        "2000::/3",
        "10.0.0.0/7",
        "fd00::/15",
        "fd00::1/128,0/0",
    ],
)
def test_routes_wider_than_the_fleet_are_refused(agent: Agent, allowed_ips: str) -> None:
    agent.queue("register", with_routes(allowed_ips))
    result = agent.up()
    assert result.code == 1
    assert "--allow-routes" in one_sentence(result.stderr)
    assert "would route more than the fleet" in result.stderr
    assert not agent.conf.exists()
    assert agent.tunnel_calls() == []


def test_narrow_routes_are_accepted(agent: Agent) -> None:
    agent.queue("register", with_routes("fd00::1/128, fd00::/16, 10.0.0.0/8, 192.0.2.7"))
    result = agent.up()
    assert result.code == 0, result
    assert "AllowedIPs = fd00::1/128, fd00::/16, 10.0.0.0/8, 192.0.2.7" in agent.conf.read_text()


SECOND_PEER = f"\n[Peer]\nPublicKey = {OTHER_SERVER_KEY}\nAllowedIPs = fd01::/64\n"


def test_a_second_peer_is_refused(agent: Agent) -> None:
    agent.queue("register", with_routes("fd00::1/128", SECOND_PEER))
    result = agent.up()
    assert result.code == 1
    assert "second [Peer]" in one_sentence(result.stderr)
    assert not agent.conf.exists()


def test_allow_routes_accepts_them_and_is_remembered(agent: Agent) -> None:
    wide = with_routes("0.0.0.0/0, ::/0", SECOND_PEER)
    agent.queue("register", wide)
    assert agent.up("--allow-routes").code == 0
    assert "AllowedIPs = 0.0.0.0/0, ::/0" in agent.conf.read_text()
    assert agent.conf.read_text().count("[Peer]") == 2
    assert "allow_routes=1" in agent.state.read_text().splitlines()
    # A later `ping` that registers again still accepts them.
    agent.queue("ping", answer(404, {"detail": "gone"}), pinged())
    agent.queue("register", wide)
    assert agent.run("ping").code == 0


def test_curl_ignores_curlrc_and_limits_answers(agent: Agent) -> None:
    assert agent.up().code == 0
    curls = [line.split() for line in agent.log() if line.startswith("curl ")]
    assert len(curls) == 2  # register, ping
    for argv in curls:
        assert argv[1] == "-q"  # only as the first argument does -q skip ~/.curlrc
        assert argv[argv.index("--max-filesize") + 1] == "65536"


@pytest.mark.parametrize("kind", ["register", "ping"])
def test_an_oversized_answer_is_refused(agent: Agent, kind: str) -> None:
    huge = answer(200, {"status": "ok", "padding": "x" * 70000})
    agent.queue(kind, huge)
    result = agent.up()
    assert result.code == 1
    assert "larger than 65536 bytes" in one_sentence(result.stderr)


def test_an_https_server_with_its_own_ca(agent: Agent, tmp_path: Path) -> None:
    ca = tmp_path / "fleet-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    server = "https://wg.example.org:8443"
    result = agent.run(
        "up", "--server", server, "--fleet", FLEET, "--cacert", str(ca), "--ping-port", "8000"
    )
    assert result.code == 0, result
    register, ping = (line.split() for line in agent.log() if line.startswith("curl "))
    assert register[register.index("--cacert") + 1] == str(ca)
    assert register[-1] == f"{server}/fleet/{FLEET}/register"
    assert "--cacert" not in ping  # the ping goes through the tunnel, to wg-fleet itself
    assert ping[-1] == f"http://[fd00::1]:8000/fleet/{FLEET}/ping"
    state = agent.state.read_text().splitlines()
    assert f"cacert={ca}" in state
    assert "ping_port=8000" in state
    agent.clear_logs()
    agent.queue("ping", answer(404, {"detail": "gone"}), pinged())
    assert agent.run("ping").code == 0
    again = next(line.split() for line in agent.log() if "/register" in line)
    assert again[again.index("--cacert") + 1] == str(ca)


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--server", SERVER, "--cacert", "/etc/hostname"], "--cacert needs an https:// server"),
        (["--server", "https://x:8443", "--cacert", "/nonexistent/ca.pem"], "not a readable"),
        (["--server", "https://x:8443", "--cacert", "relative.pem"], "absolute path"),
        (["--server", SERVER, "--ping-port", "80a"], "--ping-port must be a port number"),
        (["--server", SERVER, "--ping-port", "0"], "--ping-port must be a port number"),
    ],
)
def test_bad_tls_and_port_options_are_usage_errors(
    agent: Agent, args: list[str], problem: str
) -> None:
    result = agent.run("up", "--fleet", FLEET, *args)
    assert result.code == 2, result
    assert problem in one_sentence(result.stderr)
    assert agent.log() == []


def make_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate for 127.0.0.1 signed by it."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wg-fleet test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = (directory / n for n in ("ca.pem", "cert.pem", "key.pem"))
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_file, cert_file, key_file


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_real_curl_verifies_an_https_server_with_cacert(agent: Agent, tmp_path: Path) -> None:
    """Real curl (only wg and wg-quick are fakes) against a TLS server on loopback: refused
    without the private CA, enrolled with --cacert; the ping goes to [::1] over HTTP."""
    import http.server
    import ssl
    import threading

    ca_file, cert_file, key_file = make_tls_files(tmp_path)
    config = server_config().replace("AllowedIPs = fd00::1/128", "AllowedIPs = ::1/128")
    bodies = {
        "register": json.dumps({"status": "success", "config": config, "address": "fd00::1234"}),
        "ping": json.dumps({"status": "ok", "hostname": "test-host", "fqdn": None}),
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            body = bodies["register" if self.path.endswith("/register") else "ping"].encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    class V6Server(http.server.ThreadingHTTPServer):
        address_family = __import__("socket").AF_INET6

    tls = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    tls.socket = context.wrap_socket(tls.socket, server_side=True)
    plain = V6Server(("::1", 0), Handler)
    servers = [tls, plain]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    (agent.bin / "curl").unlink()  # the real one from here on
    url = f"https://127.0.0.1:{tls.server_address[1]}"
    options = ("--server", url, "--fleet", FLEET, "--ping-port", str(plain.server_address[1]))
    try:
        untrusted = agent.run("up", *options)
        trusted = agent.run("up", *options, "--cacert", str(ca_file))
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
    assert untrusted.code == 1
    assert "could not register" in one_sentence(untrusted.stderr)
    assert "certificate" in untrusted.stderr.lower()
    assert trusted.code == 0, trusted
    assert "Address = fd00::1234/128" in agent.conf.read_text()
    assert "wt0 is in fleet south" in trusted.stdout  # the ping through [::1] answered
