"""The only place in wg-fleet that spawns processes.

Commands are argv lists (never a shell). Secrets travel on standard input, never in argv.
Each command runs with `subprocess` in a worker thread: on this service's event loop that
was measured faster than asyncio's own subprocess support, and it keeps the loop free.
A command that outlives its timeout is killed. Failures become `CommandError`s whose
text is safe to log: anything shaped like a WireGuard key is redacted.

Error tree::

    CommandError              the command could not do its job
    ├── CommandNotFound       the binary is not installed (names the package)
    ├── CommandTimeout        killed after its timeout
    └── CommandFailed         exited non-zero
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

logger = logging.getLogger(__name__)

KEY_SHAPED = re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=")
REDACTED = "(key redacted)"
DEFAULT_TIMEOUT = 30.0

PACKAGE_OF = {
    "wg": "wireguard-tools",
    "wg-quick": "wireguard-tools",
    "wireguard-go": "wireguard-go",
    "ip": "iproute2",
}


def redact(text: str) -> str:
    """Replace every WireGuard-key-shaped string (44 base64 characters) in `text`."""
    return KEY_SHAPED.sub(REDACTED, text)


def describe(argv: Sequence[str]) -> str:
    return redact(" ".join(argv))


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class CommandError(Exception):
    """A command failed; `str()` is a redacted sentence fit for logs."""

    def __init__(self, argv: Sequence[str], message: str) -> None:
        self.argv = tuple(argv)
        self.command = os.path.basename(argv[0]) if argv else ""
        super().__init__(redact(message))


class CommandNotFound(CommandError):
    pass


class CommandTimeout(CommandError):
    pass


class CommandFailed(CommandError):
    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        self.returncode = returncode
        detail = " ".join(stderr.strip().split())[:500] or "no error output"
        super().__init__(argv, f"`{describe(argv)}` exited with status {returncode}: {detail}")


class Runner(Protocol):
    """What the rest of wg-fleet needs from a command runner (tests supply fakes)."""

    async def run(
        self,
        argv: Sequence[str],
        *,
        stdin: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        check: bool = True,
        new_session: bool = False,
    ) -> CommandResult: ...


def _environment() -> dict[str, str]:
    # A predictable C locale for parsing; LOG_LEVEL would make a daemonising
    # wireguard-go keep our output pipes open, so it is never passed on.
    env = {key: value for key, value in os.environ.items() if key != "LOG_LEVEL"}
    env["LC_ALL"] = "C"
    return env


def _run_blocking(
    argv: Sequence[str], stdin: str | None, timeout: float, new_session: bool
) -> CommandResult:
    try:
        process = subprocess.Popen(  # noqa: S603 - argv list, no shell
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_environment(),
            start_new_session=new_session,
            # Its own process group either way, so a timeout can kill everything it started.
            process_group=None if new_session else 0,
        )
    except FileNotFoundError:
        name = os.path.basename(argv[0])
        package = PACKAGE_OF.get(name)
        hint = f"; install the {package} package" if package else ""
        raise CommandNotFound(argv, f"`{name}` is not installed or not on PATH{hint}") from None
    except PermissionError as error:
        raise CommandError(argv, f"cannot execute `{argv[0]}`: {error.strerror}") from None
    try:
        stdout, stderr = process.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise CommandTimeout(
            argv, f"`{describe(argv)}` did not finish within {timeout:g} s and was killed"
        ) from None
    return CommandResult(tuple(argv), process.returncode, stdout, stderr)


class CommandRunner:
    """Runs commands in worker threads."""

    async def run(
        self,
        argv: Sequence[str],
        *,
        stdin: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        check: bool = True,
        new_session: bool = False,
    ) -> CommandResult:
        """Run `argv`; with `check`, raise `CommandFailed` on a non-zero exit.

        `new_session` starts the command in a session of its own, so that daemons it
        leaves behind (wireguard-go) do not receive signals sent to our process group.
        """
        started = time.monotonic()
        try:
            result = await asyncio.to_thread(_run_blocking, argv, stdin, timeout, new_session)
        finally:
            logger.debug("ran %s in %.1f ms", describe(argv), (time.monotonic() - started) * 1000)
        if check and result.returncode != 0:
            raise CommandFailed(argv, result.returncode, result.stderr)
        return result


class ReportingRunner:
    """Wraps any runner and reports each failed command's name to `on_failure`."""

    def __init__(self, inner: Runner, on_failure: Callable[[str], None]) -> None:
        self._inner = inner
        self._on_failure = on_failure

    async def run(
        self,
        argv: Sequence[str],
        *,
        stdin: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        check: bool = True,
        new_session: bool = False,
    ) -> CommandResult:
        try:
            return await self._inner.run(
                argv, stdin=stdin, timeout=timeout, check=check, new_session=new_session
            )
        except CommandError as error:
            self._on_failure(error.command)
            raise
