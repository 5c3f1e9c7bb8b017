"""The command line, start-up failures and the listening socket."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

import main
import serving
from config import ListenConfig
from database import Client
from tests.fakes import FakeWireGuard

REPO = Path(__file__).resolve().parents[1]


def run_main(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "main.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write_config(path: Path, **fleet: Any) -> Path:
    settings = {"ip6": "fd00:1::1", "subnet": "fd00:1::/64", "external_ip": "192.0.2.1"}
    settings.update(port=51820, **fleet)
    path.write_text(yaml.safe_dump({"domain": "t.test", "prune_timeout": "1m", "fleets": settings}))
    return path


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            "domain: t.test\nprune_timeout: 1m\nfleets:\n  abcdefghijklm:\n    ip6: fd00::1\n",
            "fleets.abcdefghijklm: fleet name 'abcdefghijklm' is longer than 12 characters "
            "(the interface wg_abcdefghijklm would exceed Linux's 15-character limit).",
        ),
        (
            "domain: t.test\nprune_timeout: 1m\nfleets:\n  a:\n    ip6: fd01::1\n"
            "    subnet: fd00::/64\n    external_ip: 192.0.2.1\n    port: 51820\n",
            "fleets.a.ip6: fd01::1 is not inside subnet fd00::/64.",
        ),
        ("domain: [unclosed\n", "is not valid YAML at line 2, column 1"),
    ],
)
def test_a_bad_config_exits_2_with_one_sentence(
    tmp_path: Path, content: str, expected: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(content)
    result = run_main("--config", str(path))
    assert result.returncode == 2
    assert expected in result.stderr
    assert result.stderr.startswith(f"{path}: ")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_a_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = run_main("--config", str(tmp_path / "absent.yaml"))
    assert (result.returncode, result.stderr) == (
        2,
        f"{tmp_path / 'absent.yaml'}: file not found.\n",
    )


def test_an_invalid_port_on_the_command_line_is_a_config_error(tmp_path: Path) -> None:
    result = run_main("--config", str(write_config(tmp_path / "c.yaml")), "--port", "70000")
    assert result.returncode == 2
    assert "listen.port: Input should be less than or equal to 65535" in result.stderr


def test_missing_wireguard_tools_are_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main.check_prerequisites() == (
        "wg, wg-quick, ip not found on PATH: install the wireguard-tools and iproute2 packages "
        "(and wireguard-go where the kernel has no WireGuard module)."
    )


def test_command_line_values_win_over_the_file(tmp_path: Path) -> None:
    arguments = main.parse_arguments(
        ["--config", "c.yaml", "--port", "9000", "--hosts-file", str(tmp_path / "h")]
    )
    assert main.overrides_from(arguments) == {"port": 9000, "hosts_file": str(tmp_path / "h")}


def test_the_default_listener_answers_on_ipv4_and_ipv6() -> None:
    sock = serving.bind_socket(ListenConfig.model_construct(host="::", port=0))
    port = sock.getsockname()[1]
    try:
        for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            with socket.socket(family, socket.SOCK_STREAM) as client:
                client.connect((address, port))
                accepted, peer = sock.accept()
                accepted.close()
                assert address in peer[0]
    finally:
        sock.close()


async def test_a_failing_wg_quick_stops_start_up_with_a_sentence(
    make_config: Callable[..., Any], fake_wg: FakeWireGuard
) -> None:
    fake_wg.fail = {"wg-quick"}
    app = main.create_app(make_config(), runner=fake_wg)
    with pytest.raises(main.StartupError, match=r"^wg-fleet could not start: `wg-quick up .*"):
        async with app.router.lifespan_context(app):
            pass


async def test_a_database_that_cannot_be_migrated_stops_start_up_with_its_words(
    tmp_path: Path, make_config: Callable[..., Any], fake_wg: FakeWireGuard
) -> None:
    """A schema the migrations cannot apply to (a table made by hand, here) is named in
    the operator's sentence, not hidden behind "not available right now"."""
    database = tmp_path / "made-by-hand.sqlite"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE clients (id INTEGER PRIMARY KEY, fleet TEXT)")
        connection.execute("CREATE TABLE events (id INTEGER PRIMARY KEY)")
    app = main.create_app(make_config(database=str(database)), runner=fake_wg)
    with pytest.raises(main.StartupError, match=r"^wg-fleet could not start: .*\(.+\)$"):
        async with app.router.lifespan_context(app):
            pass


async def test_fleets_left_out_of_the_config_are_kept_and_logged(
    start_app: Callable[..., Any], make_config: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    async with start_app() as running, running.client() as http:
        assert (await http.post("/fleet/beta/register")).status_code == 200
    config = make_config()
    only_alpha = config.model_copy(update={"fleets": {"alpha": config.fleets["alpha"]}})
    async with start_app(only_alpha) as running:
        kept = await running.context.database.read(
            lambda session: session.scalars(
                select(Client.address).where(Client.fleet == "beta")
            ).all()
        )
    assert len(kept) == 1
    assert "fleet beta is in the database but not in the config: ignored" in caplog.text
