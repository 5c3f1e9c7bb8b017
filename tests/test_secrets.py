"""No private key — a client's or the server's — leaks into argv, logs, the database,
responses or metrics; secret files and their directories are private.

The fake `wg show dump` prints the interface's real private key on its first line, as
the real one does, so the service has to drop it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from command import KEY_SHAPED, CommandResult
from config import Config
from main import create_app
from pruning import sweep_all
from tests.conftest import FLEET, Running
from tests.fakes import SERVER_PRIVATE, FakeClock, FakeWireGuard
from wireguard import generate_keypair, read_private_key


@dataclass
class RecordingRunner:
    """Wraps the fake runner, records every argv and stdin, and makes `wg show dump`
    print the interface's real private key like the real `wg` does."""

    inner: FakeWireGuard
    wireguard_dir: Path
    argvs: list[tuple[str, ...]] = field(default_factory=list)
    stdins: list[str] = field(default_factory=list)

    async def run(
        self,
        argv: Sequence[str],
        *,
        stdin: str | None = None,
        timeout: float = 30,
        check: bool = True,
        new_session: bool = False,
    ) -> CommandResult:
        self.argvs.append(tuple(argv))
        self.stdins.append(stdin or "")
        result = await self.inner.run(
            argv, stdin=stdin, timeout=timeout, check=check, new_session=new_session
        )
        if tuple(argv[:2]) == ("wg", "show") and argv[-1] == "dump":
            config = (self.wireguard_dir / f"{argv[2]}.conf").read_text()
            private = read_private_key(config)
            assert private is not None
            stdout = result.stdout.replace(SERVER_PRIVATE, private)
            result = CommandResult(result.argv, result.returncode, stdout, result.stderr)
        return result


def leaks(text: str | bytes, secrets: dict[str, str]) -> list[str]:
    """Names of the secrets found in `text`."""
    data = text.encode("utf-8", "replace") if isinstance(text, str) else text
    return [name for name, key in secrets.items() if key.encode() in data]


def stray_keys(text: str, public: set[str]) -> set[str]:
    """Key-shaped strings in `text` that are not known public keys."""
    return {match for match in KEY_SHAPED.findall(text) if match not in public}


def private_key_of(config: str) -> str:
    match = re.search(r"^PrivateKey = (\S+)$", config, re.MULTILINE)
    assert match is not None, config
    return match.group(1)


async def test_no_private_key_leaks_anywhere(
    make_config: Callable[..., Config],
    fake_wg: FakeWireGuard,
    clock: FakeClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    state = tmp_path / "state"
    wireguard_dir = tmp_path / "etc" / "wireguard"
    database = state / "clients.db"
    config = make_config(database=str(database), wireguard_dir=str(wireguard_dir))
    runner = RecordingRunner(fake_wg, wireguard_dir)
    app = create_app(config, runner=runner, clock=clock)
    secrets: dict[str, str] = {}
    public: set[str] = set()
    registrations: list[httpx.Response] = []
    others: list[httpx.Response] = []

    async with app.router.lifespan_context(app):
        running = Running(app)
        for fleet in ("alpha", "beta"):
            private = read_private_key((wireguard_dir / f"wg_{fleet}.conf").read_text())
            assert private is not None
            secrets[f"server key of {fleet}"] = private
            public.add(running.context.server_keys[fleet])

        async with running.client() as http:
            for number in range(4):
                answer = await http.post(f"/fleet/{FLEET}/register")
                registrations.append(answer)
                secrets[f"generated key {number}"] = private_key_of(answer.json()["config"])
            for number in range(2):
                own = generate_keypair()
                secrets[f"client's own key {number}"] = own.private_key
                body = {"public_key": own.public_key}
                registrations.append(await http.post(f"/fleet/{FLEET}/register", json=body))
                registrations.append(await http.post(f"/fleet/{FLEET}/register", json=body))
            # Someone pasting their private key where it does not belong gets no echo.
            for attempt in (secrets["client's own key 0"] + "x", "PrivateKey = " + own.private_key):
                others.append(
                    await http.post(f"/fleet/{FLEET}/register", json={"public_key": attempt})
                )
            fake_wg.fail.add("addconf")
            others.append(await http.post(f"/fleet/{FLEET}/register"))  # 503, logged
            fake_wg.fail.clear()
        answers = [response.json() for response in registrations]
        assert [response.status_code for response in registrations] == [200] * 8
        assert [response.status_code for response in others] == [422, 422, 503]
        public |= {answer["public_key"] for answer in answers}

        for number, answer in enumerate(answers):
            async with running.in_tunnel(answer["address"]) as http:
                others.append(await http.post(f"/fleet/{FLEET}/ping", json={"hostname": "host"}))
                others.append(await http.post(f"/fleet/{FLEET}/ping", json={}))
                if number == 0:
                    others.append(await http.post("/fleet/beta/ping", json={}))  # 403
        async with running.client() as http:
            for path in (
                "/",
                f"/fleet/{FLEET}",
                f"/fleet/{FLEET}?sort=activity&limit=2",
                f"/fleet/{FLEET}?q={answers[0]['public_key'][:6]}",
                "/fleet/nope",
                "/api/fleets",
                f"/api/fleets/{FLEET}/clients",
                f"/api/fleets/{FLEET}/clients?sort=address&limit=1",
                "/api/fleets/nope/clients",
                "/metrics",
                "/health",
                "/openapi.json",
                "/docs",
            ):
                others.append(await http.get(path))
            next_cursor = others[-6].json()["next_cursor"]
            others.append(
                await http.get(f"/api/fleets/{FLEET}/clients?sort=address&cursor={next_cursor}")
            )

        files_while_running = {
            path.name: path.read_bytes() for path in state.iterdir() if path.is_file()
        }
        clock.advance(hours=2)
        reports = await sweep_all(running.context)
        assert sum(report.pruned for report in reports) == 6
        async with running.client() as http:
            others.append(await http.get(f"/fleet/{FLEET}"))
            others.append(await http.get("/metrics"))

    files_after = {path.name: path.read_bytes() for path in state.iterdir() if path.is_file()}
    log = "\n".join(
        f"{record.levelname} {record.name} {record.getMessage()} {record.exc_text or ''}"
        for record in caplog.records
    )
    assert {logging.INFO, logging.ERROR} <= {record.levelno for record in caplog.records}

    # Public keys the service gave to wg as peers (also of registrations that failed).
    public |= {key for stdin in runner.stdins for key in re.findall(r"PublicKey = (\S+)", stdin)}
    # Argv (and what goes to wg on stdin, which should carry no private key either).
    assert [
        (argv, leaks(" ".join(argv), secrets))
        for argv in runner.argvs
        if leaks(" ".join(argv), secrets)
    ] == []
    assert [leaks(stdin, secrets) for stdin in runner.stdins if leaks(stdin, secrets)] == []
    assert {key for argv in runner.argvs for key in stray_keys(" ".join(argv), public)} == set()
    # The server's key really was printed by the fake `wg show dump`.
    assert any(argv[-1] == "dump" for argv in runner.argvs)
    # Logs at every level.
    assert leaks(log, secrets) == []
    assert stray_keys(log, public) == set()
    # The database files, while running (with its WAL) and after.
    assert "clients.db" in files_while_running
    for name, data in {**files_while_running, **files_after}.items():
        assert leaks(data, secrets) == [], name
    # Every answer but the registration that created a key; those hold only their own.
    for response in others:
        assert leaks(response.text, secrets) == [], (response.request.url, response.status_code)
    for response, answer in zip(registrations, answers, strict=True):
        found = leaks(response.text, secrets)
        assert len(found) <= 1
        if found:
            assert secrets[found[0]] in answer["config"]
    assert sum(1 for r in registrations if leaks(r.text, secrets)) == 4  # the generated ones

    # Private files and directories.
    assert state.stat().st_mode & 0o777 == 0o700
    for name in ("clients.db", "clients.db-wal", "clients.db-shm"):
        if (state / name).exists():
            assert (state / name).stat().st_mode & 0o777 == 0o600, name
    assert wireguard_dir.stat().st_mode & 0o777 == 0o700
    for fleet in ("alpha", "beta"):
        assert (wireguard_dir / f"wg_{fleet}.conf").stat().st_mode & 0o777 == 0o600


def test_a_key_pair_never_shows_its_private_half() -> None:
    keys = generate_keypair()
    for text in (repr(keys), str(keys), f"{keys}", f"{keys!r}"):
        assert keys.private_key not in text


@pytest.mark.parametrize("level", [logging.DEBUG, logging.INFO])
async def test_the_server_key_in_a_failing_dump_is_not_logged(
    make_config: Callable[..., Config],
    fake_wg: FakeWireGuard,
    clock: FakeClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    level: int,
) -> None:
    """A dump that cannot be parsed still starts with the private key: the error about it
    must not quote it."""
    caplog.set_level(level)
    wireguard_dir = tmp_path / "wireguard"
    runner = RecordingRunner(fake_wg, wireguard_dir)
    app = create_app(make_config(), runner=runner, clock=clock)
    async with app.router.lifespan_context(app):
        running = Running(app)
        private = read_private_key((wireguard_dir / "wg_alpha.conf").read_text())
        assert private is not None
        interface = fake_wg.interfaces["wg_alpha"]
        interface.peers["broken"] = "fd00:1::9/128\textra\tfields"  # a line of 10 fields
        await sweep_all(running.context)
        async with running.client() as http:
            pages: list[Any] = [await http.get(path) for path in ("/", "/api/fleets", "/metrics")]
    assert any(r.levelno == logging.ERROR for r in caplog.records)
    text = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert private not in text
    assert all(private not in page.text for page in pages)
