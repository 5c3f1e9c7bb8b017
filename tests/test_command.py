"""command.py with real, harmless binaries."""

from __future__ import annotations

import base64
import logging
import os
import time
from pathlib import Path

import pytest

from command import (
    PACKAGE_OF,
    REDACTED,
    CommandError,
    CommandFailed,
    CommandNotFound,
    CommandResult,
    CommandRunner,
    CommandTimeout,
    ReportingRunner,
    describe,
    redact,
)

KEY = base64.b64encode(bytes(range(32))).decode()
OTHER_KEY = base64.b64encode(bytes(range(100, 132))).decode()


def is_gone(pid: int) -> bool:
    """Whether `pid` no longer runs (absent, or a zombie waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in {"Z", "X"}


class Failures:
    def __init__(self) -> None:
        self.commands: list[str] = []

    def __call__(self, command: str) -> None:
        self.commands.append(command)


@pytest.fixture
def failures() -> Failures:
    return Failures()


@pytest.fixture
def runner(failures: Failures) -> ReportingRunner:
    return ReportingRunner(CommandRunner(), failures)


async def test_success(runner: ReportingRunner, failures: Failures) -> None:
    result = await runner.run(["true"])
    assert result == CommandResult(("true",), 0, "", "")
    assert failures.commands == []


async def test_output_captured(runner: ReportingRunner) -> None:
    result = await runner.run(["sh", "-c", "echo out; echo err >&2"])
    assert (result.returncode, result.stdout, result.stderr) == (0, "out\n", "err\n")


async def test_stdin_is_passed(runner: ReportingRunner) -> None:
    text = "[Peer]\nPublicKey = x\n" * 1000
    result = await runner.run(["cat"], stdin=text)
    assert result.stdout == text


async def test_no_stdin_reads_eof(runner: ReportingRunner) -> None:
    result = await runner.run(["cat"], timeout=5)
    assert result.stdout == ""


async def test_check_false_returns_failure(runner: ReportingRunner, failures: Failures) -> None:
    result = await runner.run(["sh", "-c", "echo nope >&2; exit 4"], check=False)
    assert (result.returncode, result.stderr) == (4, "nope\n")
    assert failures.commands == []


async def test_failure_raises(runner: ReportingRunner, failures: Failures) -> None:
    with pytest.raises(CommandFailed) as caught:
        await runner.run(["false"])
    assert caught.value.returncode == 1
    assert str(caught.value) == "`false` exited with status 1: no error output"
    assert failures.commands == ["false"]


async def test_failure_redacts_stderr(runner: ReportingRunner, failures: Failures) -> None:
    script = "cat >&2; exit 3"
    with pytest.raises(CommandFailed) as caught:
        await runner.run(["sh", "-c", script], stdin=f"bad key  {KEY}\nline two\n")
    message = str(caught.value)
    assert KEY not in message
    assert message == f"`sh -c {script}` exited with status 3: bad key {REDACTED} line two"
    assert caught.value.returncode == 3
    assert caught.value.command == "sh"
    assert failures.commands == ["sh"]


async def test_failure_redacts_argv(runner: ReportingRunner) -> None:
    with pytest.raises(CommandFailed) as caught:
        await runner.run(["sh", "-c", "exit 2", KEY])
    assert KEY not in str(caught.value)
    assert REDACTED in str(caught.value)


async def test_stderr_is_truncated(runner: ReportingRunner) -> None:
    with pytest.raises(CommandFailed) as caught:
        await runner.run(["sh", "-c", "head -c 5000 /dev/zero | tr '\\0' x >&2; exit 1"])
    assert str(caught.value).endswith(": " + "x" * 500)


async def test_debug_log_is_redacted(
    runner: ReportingRunner, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="command"):
        await runner.run(["true", KEY])
    assert any(REDACTED in record.getMessage() for record in caplog.records)
    assert KEY not in caplog.text


async def test_timeout_kills_process(
    runner: ReportingRunner, failures: Failures, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    started = time.monotonic()
    with pytest.raises(CommandTimeout) as caught:
        await runner.run(["sh", "-c", f'echo $$ > "{pid_file}"; exec sleep 30'], timeout=0.3)
    assert time.monotonic() - started < 10
    assert "did not finish within 0.3 s and was killed" in str(caught.value)
    assert is_gone(int(pid_file.read_text()))
    assert failures.commands == ["sh"]


async def test_timeout_in_new_session_kills_the_whole_group(
    runner: ReportingRunner, tmp_path: Path
) -> None:
    # The background `sleep` keeps the output pipes open: only killing the whole
    # process group lets the runner return before it ends by itself.
    pid_file = tmp_path / "pid"
    started = time.monotonic()
    with pytest.raises(CommandTimeout):
        await runner.run(
            ["sh", "-c", f'sleep 30 & echo $! > "{pid_file}"; wait'],
            timeout=0.3,
            new_session=True,
        )
    assert time.monotonic() - started < 10
    assert is_gone(int(pid_file.read_text()))


@pytest.mark.parametrize("new_session", [False, True])
async def test_new_session(runner: ReportingRunner, new_session: bool) -> None:
    result = await runner.run(["cat", "/proc/self/stat"], new_session=new_session)
    pid = int(result.stdout.split()[0])
    fields = result.stdout.rsplit(")", 1)[1].split()
    process_group, session = int(fields[2]), int(fields[3])
    if new_session:
        assert session == process_group == pid
    else:
        assert session == os.getsid(0) != pid


@pytest.mark.parametrize("name", sorted(PACKAGE_OF))
async def test_missing_binary_names_package(
    runner: ReportingRunner,
    failures: Failures,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(CommandNotFound) as caught:
        await runner.run([name, "show"])
    assert str(caught.value) == (
        f"`{name}` is not installed or not on PATH; install the {PACKAGE_OF[name]} package"
    )
    assert failures.commands == [name]


async def test_missing_binary_without_known_package(
    runner: ReportingRunner, tmp_path: Path
) -> None:
    with pytest.raises(CommandNotFound) as caught:
        await runner.run([str(tmp_path / "no-such-tool")])
    assert str(caught.value) == "`no-such-tool` is not installed or not on PATH"


async def test_not_executable(runner: ReportingRunner, failures: Failures, tmp_path: Path) -> None:
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n", encoding="utf-8")
    script.chmod(0o644)
    with pytest.raises(CommandError) as caught:
        await runner.run([str(script)])
    assert type(caught.value) is CommandError
    assert str(caught.value) == f"cannot execute `{script}`: Permission denied"
    assert failures.commands == ["script"]


async def test_environment(runner: ReportingRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "debug")
    monkeypatch.setenv("WG_FLEET_PROBE", "kept")
    monkeypatch.setenv("LC_ALL", "de_DE.UTF-8")
    result = await runner.run(["sh", "-c", 'echo "${LOG_LEVEL-unset} $WG_FLEET_PROBE $LC_ALL"'])
    assert result.stdout == "unset kept C\n"


async def test_runner_without_callback() -> None:
    with pytest.raises(CommandFailed):
        await CommandRunner().run(["false"])


def test_redact() -> None:
    text = f"private {KEY}\tpublic {OTHER_KEY}\n"
    assert redact(text) == f"private {REDACTED}\tpublic {REDACTED}\n"


@pytest.mark.parametrize(
    "text",
    [
        KEY[:-2] + "=",  # 43 characters
        "x" + KEY,  # part of a longer base64 run
        KEY[:-1],  # no padding
        "hello world, status 1",
    ],
)
def test_redact_leaves_other_text(text: str) -> None:
    assert redact(text) == text


def test_describe_redacts_argv() -> None:
    assert describe(["wg", "set", "wg_x", "peer", KEY, "remove"]) == (
        f"wg set wg_x peer {REDACTED} remove"
    )
