"""The real client/wg-fleet-client, run with sh in client namespaces against a real server.

Covers SPEC §6: `up` gives a tunnel and a name and is idempotent; a pruned client and a
client of a server rebuilt with a new key come back on the next `ping` with the same key;
`down` removes the interface.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from tests.e2e.harness import (
    HTTP_PORT,
    REPO,
    SERVER_V4,
    Client,
    Lab,
    Server,
    fleet_config,
    sh,
    unique,
    wait_for,
)

SCRIPT = REPO / "client" / "wg-fleet-client"
SERVER_URL = f"http://{SERVER_V4}:{HTTP_PORT}"
TOKEN = "e2e-registration-token-0123456789"


def start(lab: Lab, settings: dict[str, Any] | None = None, **overrides: Any) -> tuple[Server, str]:
    fleet = unique("f")
    config = {
        "domain": "fleet.test",
        "prune_timeout": "30m",
        "fleets": {fleet: {**fleet_config(fleet, 5), **(settings or {})}},
        **overrides,
    }
    server = Server(lab, config)
    server.start()
    return server, fleet


def agent(
    client: Client, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`sh client/wg-fleet-client ARGS` inside the client's namespace, on its own files."""
    assert client.config_dir is not None
    argv = [
        "ip", "netns", "exec", client.namespace.name, "sh", str(SCRIPT), *args,
        "--interface", client.interface, "--config-dir", str(client.config_dir),
    ]  # fmt: skip
    environment = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=120,
        env={**environment, **(env or {})},
        check=False,
    )


def succeeded(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}{result.stderr}"
    assert result.stderr == "", result.stderr
    return result.stdout


def files(client: Client) -> tuple[Path, Path]:
    assert client.config_dir is not None
    return (
        client.config_dir / f"{client.interface}.conf",
        client.config_dir / f"{client.interface}.key",
    )


def setting(conf: Path, key: str) -> str:
    return next(
        line.split("=", 1)[1].strip()
        for line in conf.read_text().splitlines()
        if line.startswith(f"{key} =")
    )


def public_key(client: Client) -> str:
    _, key = files(client)
    return sh("wg", "pubkey", stdin=key.read_text()).strip()


def ifindex(client: Client) -> int:
    return int(
        client.namespace.run("ip", "-o", "link", "show", "dev", client.interface).split(":")[0]
    )


def interface_exists(client: Client) -> bool:
    return client.namespace.ok("ip", "link", "show", "dev", client.interface)


def test_up_gives_a_tunnel_and_a_name_and_running_it_again_changes_nothing(lab: Lab) -> None:
    server, fleet = start(lab, {"registration_token": TOKEN})
    ip6 = server.config["fleets"][fleet]["ip6"]
    client = lab.client()
    up = ("up", "--server", SERVER_URL, "--fleet", fleet, "--hostname", "excavator")

    refused = agent(client, *up)
    assert refused.returncode == 1
    assert refused.stderr.startswith("wg-fleet-client: the server answered 401 "), refused.stderr
    assert len(refused.stderr.splitlines()) == 1

    assert f"as excavator.{fleet}.fleet.test" in succeeded(
        agent(client, *up, env={"WG_FLEET_TOKEN": TOKEN})
    )
    conf, key = files(client)
    address = setting(conf, "Address").removesuffix("/128")
    assert server.peers(fleet) == {public_key(client): f"{address}/128"}
    assert client.can_ping(ip6)
    wait_for(
        lambda: f"{address} excavator.{fleet}.fleet.test\n" in server.hosts_file.read_text(),
        10,
        "the name in the hosts file",
    )
    for path in (conf, key):
        assert path.stat().st_mode & 0o777 == 0o600
    assert key.read_text().strip() not in server.output()  # the private key stayed here

    # Again (the token now comes from the remembered state): nothing changes.
    state = [(p.read_bytes(), p.stat().st_mtime_ns) for p in (conf, key)]
    index = ifindex(client)
    succeeded(agent(client, *up))
    assert [(p.read_bytes(), p.stat().st_mtime_ns) for p in (conf, key)] == state
    assert ifindex(client) == index  # not restarted
    assert server.peers(fleet) == {public_key(client): f"{address}/128"}

    # A peer setting changed on the server: applied with `wg syncconf`, without a restart.
    server.config["fleets"][fleet]["persistent_keepalive"] = 7
    server.stop()
    server.start()
    succeeded(agent(client, *up))
    assert setting(conf, "PersistentKeepalive") == "7"
    assert setting(conf, "Address") == f"{address}/128"
    keepalive = client.namespace.run("wg", "show", client.interface, "persistent-keepalive")
    assert keepalive.split() == [setting(conf, "PublicKey"), "7"]
    assert ifindex(client) == index

    # The timer's ping: options from the last up, answer through the tunnel.
    out = succeeded(agent(client, "ping"))
    assert f"as excavator.{fleet}.fleet.test ({address})" in out
    assert "registering again" not in out
    assert ifindex(client) == index


def test_a_pruned_client_comes_back_with_the_same_key(lab: Lab) -> None:
    server, fleet = start(lab, prune_timeout="5s", prune_interval="1s")
    ip6 = server.config["fleets"][fleet]["ip6"]
    client = lab.client()
    succeeded(agent(client, "up", "--server", SERVER_URL, "--fleet", fleet, "--hostname", "digger"))
    conf, _ = files(client)
    key = public_key(client)
    first = setting(conf, "Address")

    # Silent with its tunnel down (`down` removes the interface, twice is fine).
    succeeded(agent(client, "down"))
    assert not interface_exists(client)
    succeeded(agent(client, "down"))
    wait_for(lambda: key not in server.peers(fleet), 30, "the silent client to be pruned")

    out = succeeded(agent(client, "ping"))
    assert "registering again" in out
    second = setting(conf, "Address")
    assert second != first  # a new address from the pool: the config was rewritten
    assert server.peers(fleet) == {key: second}  # the same key
    assert client.can_ping(ip6, timeout=30)
    assert f"as digger.{fleet}.fleet.test" in out

    # Silent with its tunnel up: the server removed the peer, the tunnel gets no answer.
    index = ifindex(client)
    wait_for(lambda: key not in server.peers(fleet), 30, "the client to be pruned again")
    out = succeeded(agent(client, "ping"))
    assert "no answer" in out
    assert "registering again" in out
    third = setting(conf, "Address")
    assert server.peers(fleet) == {key: third}
    assert client.can_ping(ip6, timeout=30)
    assert ifindex(client) != index  # the tunnel was restarted to handshake at once


def test_a_server_rebuilt_with_a_new_key_is_found_again(lab: Lab) -> None:
    server, fleet = start(lab)
    ip6 = server.config["fleets"][fleet]["ip6"]
    client = lab.client()
    succeeded(agent(client, "up", "--server", SERVER_URL, "--fleet", fleet))
    conf, _ = files(client)
    key = public_key(client)
    interface = f"wg_{fleet}"
    old_server_key = lab.server.run("wg", "show", interface, "public-key").strip()
    assert setting(conf, "PublicKey") == old_server_key

    server.stop()
    (server.wireguard_dir / f"{interface}.conf").unlink()
    for path in server.state.glob(f"{server.database.name}*"):
        path.unlink()
    lab.server.run("ip", "link", "del", interface)
    server.start()
    new_server_key = lab.server.run("wg", "show", interface, "public-key").strip()
    assert new_server_key != old_server_key
    assert server.peers(fleet) == {}

    out = succeeded(agent(client, "ping"))
    assert "no answer" in out
    assert "registering again" in out
    assert setting(conf, "PublicKey") == new_server_key
    assert server.peers(fleet) == {key: setting(conf, "Address")}
    assert client.can_ping(ip6, timeout=30)

    succeeded(agent(client, "down"))
    assert not interface_exists(client)
