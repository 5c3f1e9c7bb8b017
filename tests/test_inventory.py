"""The Ansible inventory: its JSON, its protection, and the inventory script as the real
`ansible-inventory` runs it."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from admin_auth import hash_password
from inventory import Member, build_inventory, group_name
from names import assign_names, compile_rules
from tests.conftest import FLEET

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "contrib" / "ansible" / "wg_fleet_inventory"
ANSIBLE_INVENTORY = Path(sys.executable).parent / "ansible-inventory"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
PASSWORD = "pw"
WRONG = "guess"

StartApp = Callable[..., Any]


def member(address: str, hostname: str | None, **labels: str) -> Member:
    return Member("contest", address, hostname, labels or None, T0, f"key-{address}", None)


def inventory_of(members: list[tuple[Member, bool]]) -> dict[str, Any]:
    rules = compile_rules({"contest": ("{hostname}.{label.site}.{domain}", "{hostname}")})
    naming = assign_names((m.entry() for m, _ in members), rules, "icpcnet.internal")
    return build_inventory(members, naming, ["contest", "spare"])


def test_group_names_are_lowercased_and_sanitised() -> None:
    assert group_name("site", "UCF") == "site_ucf"
    assert group_name("site", "São Paulo-2") == "site_s_o_paulo_2"
    assert group_name("team", "") == "team_"


def test_the_inventory_groups_hosts_by_fleet_label_and_liveness() -> None:
    inventory = inventory_of(
        [
            (member("fd00::42", "t42", site="UCF", team="42"), True),
            (member("fd00::7", "t7", site="ucf"), False),
            (member("fd00::9", None, site="mit"), False),
        ]
    )
    assert inventory["_meta"]["hostvars"] == {
        "t42.ucf.icpcnet.internal": {
            "ansible_host": "fd00::42",
            "wg_fleet": "contest",
            "wg_fleet_labels": {"site": "UCF", "team": "42"},
            "wg_fleet_online": True,
        },
        "t7.ucf.icpcnet.internal": {
            "ansible_host": "fd00::7",
            "wg_fleet": "contest",
            "wg_fleet_labels": {"site": "ucf"},
            "wg_fleet_online": False,
        },
        "fd00::9": {
            "ansible_host": "fd00::9",
            "wg_fleet": "contest",
            "wg_fleet_labels": {"site": "mit"},
            "wg_fleet_online": False,
        },
    }
    groups = {name: body["hosts"] for name, body in inventory.items() if "hosts" in body}
    assert groups == {
        "fleet_contest": ["fd00::9", "t42.ucf.icpcnet.internal", "t7.ucf.icpcnet.internal"],
        "fleet_spare": [],
        "online": ["t42.ucf.icpcnet.internal"],
        "offline": ["fd00::9", "t7.ucf.icpcnet.internal"],
        "unnamed": ["fd00::9"],
        # "UCF" and "ucf" map to the same group.
        "site_ucf": ["t42.ucf.icpcnet.internal", "t7.ucf.icpcnet.internal"],
        "site_mit": ["fd00::9"],
        "team_42": ["t42.ucf.icpcnet.internal"],
    }
    assert inventory["all"] == {"children": sorted(groups)}


@pytest.mark.both_backends
async def test_the_api_serves_the_inventory_behind_the_admin_password(
    start_app: StartApp,
) -> None:
    admin = {"username": "admin", "password_hash": hash_password("pw")}
    credentials = base64.b64encode(b"admin:pw").decode()
    async with start_app(admin=admin, names=["{hostname}.{label.site}"]) as running:
        async with running.client() as http:
            address = (await http.post(f"/fleet/{FLEET}/register")).json()["address"]
        async with running.in_tunnel(address) as tunnel:
            body = {"hostname": "t1", "labels": {"site": "ucf"}}
            assert (await tunnel.post(f"/fleet/{FLEET}/ping", json=body)).status_code == 200
        async with running.client() as http:
            refused = await http.get("/api/inventory")
            allowed = await http.get(
                "/api/inventory", headers={"Authorization": f"Basic {credentials}"}
            )
    assert refused.status_code == 401
    assert allowed.status_code == 200
    inventory = allowed.json()
    assert inventory["_meta"]["hostvars"] == {
        "t1.ucf": {
            "ansible_host": address,
            "wg_fleet": FLEET,
            "wg_fleet_labels": {"site": "ucf"},
            "wg_fleet_online": False,
        }
    }
    assert inventory["site_ucf"] == {"hosts": ["t1.ucf"]}
    assert inventory["fleet_beta"] == {"hosts": []}
    assert set(inventory["all"]["children"]) == {
        "fleet_alpha",
        "fleet_beta",
        "online",
        "offline",
        "unnamed",
        "site_ucf",
    }


# --- the inventory script, run by ansible-inventory ------------------------------------


class InventoryServer:
    """A stand-in wg-fleet that serves one inventory behind HTTP Basic on loopback."""

    def __init__(self, inventory: dict[str, Any], user: str, password: str) -> None:
        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.paths: list[str] = []
        paths = self.paths

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                paths.append(self.path)
                if self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.end_headers()
                    return
                body = json.dumps(inventory).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> InventoryServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def served() -> Iterator[InventoryServer]:
    inventory = inventory_of(
        [
            (member("fd00::42", "t42", site="ucf", team="42"), True),
            (member("fd00::9", None, site="mit"), False),
        ]
    )
    with InventoryServer(inventory, "admin", "pw") as server:
        yield server


def run(argv: list[str], url: str, tmp_path: Path, credential: str = PASSWORD) -> Any:
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
        "WG_FLEET_URL": url,
        "WG_FLEET_USER": "admin",
        "WG_FLEET_PASSWORD": credential,
    }
    return subprocess.run(
        argv, capture_output=True, text=True, env=environment, timeout=120, check=False
    )


def test_the_script_prints_the_list_and_one_host(served: InventoryServer, tmp_path: Path) -> None:
    listed = run([str(SCRIPT), "--list"], served.url, tmp_path)
    host = run([str(SCRIPT), "--host", "t42.ucf.icpcnet.internal"], served.url, tmp_path)
    unknown = run([str(SCRIPT), "--host", "nobody"], served.url, tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["site_ucf"] == {"hosts": ["t42.ucf.icpcnet.internal"]}
    assert json.loads(host.stdout) == {
        "ansible_host": "fd00::42",
        "wg_fleet": "contest",
        "wg_fleet_labels": {"site": "ucf", "team": "42"},
        "wg_fleet_online": True,
    }
    assert json.loads(unknown.stdout) == {}
    assert served.paths == ["/api/inventory"] * 3


def test_the_script_says_what_went_wrong(served: InventoryServer, tmp_path: Path) -> None:
    wrong = run([str(SCRIPT), "--list"], served.url, tmp_path, WRONG)
    assert wrong.returncode == 1
    assert wrong.stderr == f"wg_fleet_inventory: {served.url} answered 401 Unauthorized.\n"
    unset = run([str(SCRIPT), "--list"], "", tmp_path)
    assert unset.returncode == 2
    assert "set WG_FLEET_URL" in unset.stderr


def test_ansible_inventory_reads_the_script(served: InventoryServer, tmp_path: Path) -> None:
    assert ANSIBLE_INVENTORY.exists(), "ansible-core is in requirements-dev.txt"
    result = run([str(ANSIBLE_INVENTORY), "--list", "-i", str(SCRIPT)], served.url, tmp_path)
    assert result.returncode == 0, result.stderr
    inventory = json.loads(result.stdout)
    hostvars = inventory["_meta"]["hostvars"]
    assert hostvars["t42.ucf.icpcnet.internal"]["ansible_host"] == "fd00::42"
    assert hostvars["fd00::9"]["wg_fleet_labels"] == {"site": "mit"}
    assert inventory["site_ucf"]["hosts"] == ["t42.ucf.icpcnet.internal"]
    assert inventory["team_42"]["hosts"] == ["t42.ucf.icpcnet.internal"]
    assert inventory["unnamed"]["hosts"] == ["fd00::9"]
    assert "site_mit" in inventory["all"]["children"]
