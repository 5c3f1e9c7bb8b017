"""A config edit never deletes data: clients left outside an edited subnet keep their
rows, the service refuses to start (exit 2, naming the fleet, the count and the way
out), and only `main.py orphans --remove` deletes them."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from config import Config
from database import Client, Database
from main import StartupError, create_app
from tests.conftest import Running
from tests.fakes import FakeWireGuard

REPO = Path(__file__).resolve().parents[1]
StartApp = Callable[..., AbstractAsyncContextManager[Running]]
EDITED = {"ip6": "fd00:7::1", "subnet": "fd00:7::/64", "external_ip": "192.0.2.1", "port": 51820}
BETA = {"ip6": "fd00:2::1", "subnet": "fd00:2::/64", "external_ip": "2001:db8::1", "port": 51821}


def edited(make_config: Callable[..., Config]) -> Config:
    """The test config with alpha's subnet changed (a typo, say)."""
    config = make_config()
    alpha = config.fleets["alpha"].model_copy(
        update={"ip6": IPv6Address(EDITED["ip6"]), "subnet": IPv6Network(EDITED["subnet"])}
    )
    return config.model_copy(update={"fleets": {**config.fleets, "alpha": alpha}})


async def populate(start_app: StartApp) -> list[str]:
    """Two clients in alpha and one in beta; return alpha's addresses."""
    async with start_app() as running, running.client() as http:
        answers = [(await http.post("/fleet/alpha/register")).json() for _ in range(2)]
        assert (await http.post("/fleet/beta/register")).status_code == 200
    return sorted(answer["address"] for answer in answers)


async def addresses(config: Config) -> list[str]:
    database = Database(config.database)
    try:
        return sorted(await database.read(lambda s: s.scalars(select(Client.address)).all()))
    finally:
        database.close()


def yaml_config(tmp_path: Path, config: Config) -> Path:
    path = tmp_path / "edited.yaml"
    fleets: dict[str, Any] = {
        "alpha": EDITED,
        "beta": {
            "ip6": "fd00:2::1",
            "subnet": "fd00:2::/64",
            "external_ip": "2001:db8::1",
            "port": 51821,
        },
    }
    path.write_text(
        yaml.safe_dump(
            {
                "domain": "fleet.test",
                "prune_timeout": "30m",
                "database": config.database,
                "hosts_file": str(tmp_path / "run" / "hosts"),
                "wireguard_dir": str(tmp_path / "wireguard"),
                "fleets": fleets,
            }
        )
    )
    return path


def run_main(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "main.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_start_up_refuses_and_deletes_nothing(
    start_app: StartApp, make_config: Callable[..., Config], fake_wg: FakeWireGuard
) -> None:
    before = await populate(start_app)
    config = edited(make_config)
    app = create_app(config, runner=fake_wg)
    with pytest.raises(StartupError) as caught:
        async with app.router.lifespan_context(app):
            pass
    assert str(caught.value) == (
        "wg-fleet does not start: fleet alpha has 2 client(s) outside its subnet fd00:7::/64 "
        "(was the subnet edited?). Nothing was deleted. Put the old subnet back, or list those "
        "clients with `python3 main.py orphans --config PATH` and delete them by adding "
        "`--remove`."
    )
    assert set(before) <= set(await addresses(config))
    assert len(await addresses(config)) == 3


async def test_main_exits_2_then_orphans_lists_and_removes_them(
    start_app: StartApp, make_config: Callable[..., Config], tmp_path: Path
) -> None:
    alpha = await populate(start_app)
    config = make_config()
    path = yaml_config(tmp_path, config)

    refused = run_main("--config", str(path))
    assert refused.returncode == 2
    assert refused.stderr.startswith(
        "wg-fleet does not start: fleet alpha has 2 client(s) outside its subnet fd00:7::/64"
    )
    assert f"`python3 main.py orphans --config {path}`" in refused.stderr
    assert "Traceback" not in refused.stderr

    listed = run_main("orphans", "--config", str(path))
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert [line.split("\t")[:2] for line in lines] == [["alpha", a] for a in alpha]
    assert all(line.endswith("\toutside fd00:7::/64") for line in lines)
    assert "2 client(s) outside their fleet's subnet; add --remove to delete them" in listed.stderr
    assert len(await addresses(config)) == 3  # listing deletes nothing

    removed = run_main("orphans", "--config", str(path), "--remove")
    assert removed.returncode == 0, removed.stderr
    assert "removed 2 client(s)" in removed.stderr
    left = await addresses(config)
    assert len(left) == 1
    assert left[0].startswith("fd00:2::")  # beta's client stays

    again = run_main("orphans", "--config", str(path))
    assert (again.returncode, again.stdout) == (0, "")
    assert "no client is outside its fleet's subnet" in again.stderr
