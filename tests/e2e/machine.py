"""Debian machines booted with systemd as PID 1 (systemd-nspawn), for the deployment tests.

The root tree is built once with debootstrap and cached under CACHE, keyed by its package
list: systemd and the packages contrib/install.sh installs (read from the script, so the
two cannot drift apart), so install.sh finds them present and the machines need no
network of their own. Each machine boots an overlay of that tree: its upper directory
keeps what the machine wrote across a reboot, the cached tree itself stays pristine.

The machine joins a network namespace the test made (`--network-namespace-path`), with
`/dev/net/tun` bound in for wireguard-go. Commands run inside with `nsenter` into the
namespaces of the machine's PID 1, under a clean environment.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.e2e.harness import REPO, sh, wait_for

CACHE = Path(os.environ.get("WG_FLEET_TEST_CACHE", "/var/cache/wg-fleet-test"))
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# What a machine needs besides what install.sh installs: systemd to boot, curl and ping
# for the client agent and the checks.
BASE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "curl", "iputils-ping", "ca-certificates")
# Part of the cache key: bump it when prepare() changes what a cached tree holds.
TREE_LAYOUT = 2
HOST_TOOLS = {"systemd-nspawn": "systemd-container", "debootstrap": "debootstrap"}
ENVIRONMENT = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"]


def install_script_packages() -> tuple[str, ...]:
    """The Debian packages contrib/install.sh installs when they are missing."""
    text = (REPO / "contrib" / "install.sh").read_text()
    found = re.search(r"^packages=\(([^)]*)\)", text, re.M)
    assert found is not None, "contrib/install.sh no longer lists its packages as packages=(...)"
    return tuple(found.group(1).split())


def packages() -> tuple[str, ...]:
    return tuple(sorted(set(BASE_PACKAGES + install_script_packages())))


def missing_host_tools() -> str | None:
    for binary, package in HOST_TOOLS.items():
        if shutil.which(binary) is None:
            return f"the systemd tests need `{binary}` (scripts/setup --dev installs {package})"
    return None


def base_tree() -> Path:
    """The cached root tree for this package list, built with debootstrap when absent."""
    wanted = packages()
    described = f"{TREE_LAYOUT} {SUITE} {MIRROR} minbase {' '.join(wanted)}"
    key = hashlib.sha256(described.encode()).hexdigest()
    tree = CACHE / f"{SUITE}-{key[:12]}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time, also across test runs
        if (tree / "root" / "usr" / "lib" / "systemd" / "systemd").exists():
            return tree / "root"
        building = CACHE / f".building-{key[:12]}"
        shutil.rmtree(building, ignore_errors=True)
        building.mkdir()
        log = building / "debootstrap.log"
        with log.open("wb") as output:
            result = subprocess.run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(wanted)}",
                    SUITE,
                    str(building / "root"),
                    MIRROR,
                ],
                stdout=output,
                stderr=subprocess.STDOUT,
                timeout=900,
                check=False,
            )
        if result.returncode != 0:
            raise AssertionError(f"debootstrap failed:\n{log.read_text()[-3000:]}")
        prepare(building / "root")
        shutil.rmtree(tree, ignore_errors=True)
        building.rename(tree)
        return tree / "root"


def prepare(root: Path) -> None:
    """What an image gets before its first boot: an empty machine-id (each boot makes one,
    as on a cloned machine) and a host name of its own rather than the build host's."""
    (root / "etc" / "machine-id").write_text("")
    (root / "etc" / "hostname").write_text("debian\n")


class Machine:
    """One booted container: an overlay over the base tree, in a given network namespace."""

    def __init__(self, workdir: Path, name: str, netns: str) -> None:
        self.name = name
        self.netns = netns
        self.dir = workdir / name
        self.upper, self.work, self.root = (self.dir / d for d in ("upper", "work", "root"))
        for directory in (self.upper, self.work, self.root):
            directory.mkdir(parents=True)
        self.base = base_tree()
        sh(
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            f"lowerdir={self.base},upperdir={self.upper},workdir={self.work}",
            str(self.root),
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "console.log"
        self.boots = 0

    def boot(self) -> float:
        """Boot the tree (again) and wait until systemd has finished starting up; returns
        the seconds it took."""
        assert self.process is None
        started = time.monotonic()
        self.boots += 1
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    "systemd-nspawn",
                    "--quiet",
                    f"--directory={self.root}",
                    f"--machine={self.name}",
                    "--boot",
                    "--register=no",
                    "--keep-unit",
                    "--console=passive",
                    f"--network-namespace-path=/run/netns/{self.netns}",
                    "--bind=/dev/net/tun",
                    "--capability=CAP_NET_ADMIN",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(self._booted, 120, f"{self.name} to boot", interval=0.5)
        return time.monotonic() - started

    def _booted(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(
                f"systemd-nspawn exited {self.process.returncode}:\n{self.log.read_text()}"
            )
        if self.leader() is None:
            return False
        state = self.run("systemctl", "is-system-running", check=False).strip()
        return state in ("running", "degraded")

    def leader(self) -> int | None:
        """The host PID of the machine's PID 1 (systemd), or None while it starts."""
        assert self.process is not None
        pending = [self.process.pid]
        while pending:
            pid = pending.pop()
            with contextlib.suppress(OSError):
                status = Path(f"/proc/{pid}/status").read_text()
                nspid = re.search(r"^NSpid:\s+(.*)$", status, re.M)
                if nspid and pid != self.process.pid and nspid.group(1).split()[-1] == "1":
                    comm = Path(f"/proc/{pid}/comm").read_text().strip()
                    return pid if comm == "systemd" else None
                for task in Path(f"/proc/{pid}/task").iterdir():
                    pending += [int(c) for c in (task / "children").read_text().split()]
        return None

    def command(self, *argv: str, env: dict[str, str] | None = None) -> list[str]:
        """argv for running a command inside the machine, in a clean environment."""
        leader = self.leader()
        assert leader is not None, f"{self.name} is not running"
        variables = [*ENVIRONMENT, *(f"{name}={value}" for name, value in (env or {}).items())]
        return ["nsenter", "-t", str(leader), "-a", "-r", "-w", "env", "-i", *variables, *argv]

    def run(
        self,
        *argv: str,
        check: bool = True,
        timeout: float = 60,
        stdin: str | None = None,
        env: dict[str, str] | None = None,
    ) -> str:
        result = subprocess.run(
            self.command(*argv, env=env),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=stdin,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"in {self.name}: {' '.join(argv)} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}"
            )
        return result.stdout

    def ok(self, *argv: str, timeout: float = 60) -> bool:
        result = subprocess.run(self.command(*argv), capture_output=True, timeout=timeout)
        return result.returncode == 0

    def path(self, inside: str) -> Path:
        """A path of the machine, as seen from the host (through the overlay)."""
        return self.root / inside.lstrip("/")

    def copy_checkout(self, destination: str, source: Path = REPO) -> Path:
        """Copy a checkout (without .git and .venv) to `destination` in the machine."""
        target = self.path(destination)
        target.mkdir(parents=True)
        packed = subprocess.run(
            ["tar", "--exclude=./.git", "--exclude=./.venv", "-C", str(source), "-cf", "-", "."],
            capture_output=True,
            check=True,
        )
        subprocess.run(["tar", "-xf", "-", "-C", str(target)], input=packed.stdout, check=True)
        return target

    def poweroff(self) -> None:
        """`systemctl poweroff` inside, and wait for the container to end."""
        assert self.process is not None
        self.run("systemctl", "poweroff", check=False)
        self.process.wait(timeout=90)
        self.process = None

    def close(self) -> None:
        if self.process is not None:
            with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                self.poweroff()
        if self.process is not None:
            os.killpg(self.process.pid, 9)
            self.process.wait(timeout=30)
            self.process = None
        sh("umount", str(self.root), check=False)


@contextlib.contextmanager
def machine(workdir: Path, name: str, netns: str) -> Iterator[Machine]:
    booted = Machine(workdir, name, netns)
    try:
        yield booted
    finally:
        booted.close()
