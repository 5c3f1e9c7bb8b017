"""contrib/install.sh, and the copy it installs, run from where it was installed.

Every check runs the installed copy with Python's isolated mode (`-I`) from an empty
directory, so nothing of the checkout can stand in for a file the install forgot. What
must be installed is read from the checkout's own tree, not from pyproject.toml's list.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REQUIRED = os.environ.get("WG_FLEET_REQUIRE_E2E") == "1"
DISTRIBUTION = "wg-fleet"


@dataclass
class Installed:
    prefix: Path
    config: Path
    units: Path
    elsewhere: Path  # an empty working directory, outside the checkout

    @property
    def python(self) -> Path:
        return self.prefix / ".venv" / "bin" / "python"

    def run(self, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            cwd=self.elsewhere,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )

    def python_says(self, code: str) -> str:
        result = self.run(str(self.python), "-I", "-c", code)
        assert result.returncode == 0, result.stderr
        return result.stdout


def run_install(installed: Installed) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "PREFIX": str(installed.prefix),
        "CONFIG": str(installed.config),
        "UNIT_DIR": str(installed.units),
        "PYTHON": sys.executable,
        "NO_START": "1",
    }
    for name in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_CERT", "PIP_NO_INDEX"):
        if name in os.environ:
            env[name] = os.environ[name]
    return subprocess.run(
        [str(REPO / "contrib" / "install.sh")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    reason = None
    if shutil.which("dpkg-query") is None:
        reason = "install.sh is for Debian (dpkg-query is missing)"
    elif os.geteuid() != 0:
        reason = "install.sh needs root"
    if reason:
        if REQUIRED:
            pytest.fail(f"WG_FLEET_REQUIRE_E2E=1 but {reason}")
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("install")
    root.chmod(0o755)
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    installed = Installed(root / "opt", root / "wg-fleet.yaml", root / "units", elsewhere)
    result = run_install(installed)
    assert result.returncode == 0, result.stdout + result.stderr
    return installed


def checkout_files() -> set[str]:
    """What the service needs from the checkout, found in its tree."""
    wanted = {path.name for path in REPO.glob("*.py")}
    for folder, pattern in (("migrations", "**/*"), ("templates", "**/*"), ("static", "**/*")):
        wanted |= {
            str(path.relative_to(REPO))
            for path in (REPO / folder).glob(pattern)
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
        }
    return wanted


def installed_files(installed: Installed) -> list[str]:
    code = (
        "import json; from importlib.metadata import files;"
        f"print(json.dumps([str(f) for f in files({DISTRIBUTION!r})]))"
    )
    files: list[str] = json.loads(installed.python_says(code))
    return files


def test_every_file_the_service_needs_is_installed(installed: Installed) -> None:
    files = set(installed_files(installed))
    assert sorted(checkout_files() - files) == []
    # ... and nothing that is not the service's.
    assert [f for f in files if f.split("/")[0] in ("tests", "bench", "client", "contrib")] == []


def test_the_installed_copy_runs_from_its_prefix(installed: Installed) -> None:
    located = installed.python_says(
        "import main, migrations, wireguard;"
        "print(main.__file__); print(migrations.__file__); print(wireguard.__file__)"
    )
    for path in located.split():
        assert Path(path).is_relative_to(installed.prefix), path
    result = installed.run(str(installed.prefix / ".venv" / "bin" / "wg-fleet"), "--help")
    assert result.returncode == 0, result.stderr
    assert "--config" in result.stdout


def test_the_installed_copy_loads_its_templates_and_static_files(installed: Installed) -> None:
    pages = sorted(path.name for path in (REPO / "templates").glob("*.html"))
    loaded = installed.python_says(
        "import main; templates = main.make_templates();"
        f"print([templates.get_template(name).name for name in {pages!r}]);"
        "print(sorted(p.name for p in (main.HERE / 'static').iterdir()))"
    )
    static = sorted(path.name for path in (REPO / "static").iterdir())
    assert loaded.splitlines() == [str(pages), str(static)]


def test_the_installed_copy_migrates_a_database(installed: Installed) -> None:
    database = installed.elsewhere / "clients.db"
    config = installed.elsewhere / "config.yaml"
    config.write_text(
        "domain: example.internal\nprune_timeout: 30m\n"
        f"database: {database}\n"
        "fleets:\n  alpha:\n    ip6: fd00:1::1\n    subnet: fd00:1::/64\n"
        "    external_ip: 192.0.2.1\n    port: 51820\n"
    )
    wg_fleet = str(installed.prefix / ".venv" / "bin" / "wg-fleet")
    result = installed.run(wg_fleet, "migrate", "--config", str(config))
    assert result.returncode == 0, result.stderr
    revisions, parents = set(), set()
    for script in (REPO / "migrations" / "versions").glob("*.py"):
        source = script.read_text()
        revisions |= set(re.findall(r'^revision = "([^"]+)"', source, re.M))
        parents |= set(re.findall(r'^down_revision = "([^"]+)"', source, re.M))
    with sqlite3.connect(database) as connection:
        (version,) = connection.execute("select version_num from alembic_version").fetchone()
        tables = {row[0] for row in connection.execute("select name from sqlite_master")}
    assert version in revisions - parents  # the head
    assert "clients" in tables


def test_installed_code_is_owned_by_root_and_writable_by_root_only(installed: Installed) -> None:
    offending = []
    for directory, names, files in os.walk(installed.prefix):
        for name in [*names, *files]:
            path = Path(directory) / name
            if path.is_symlink():  # the venv's python -> /usr/bin/python3
                continue
            status = path.lstat()
            if status.st_uid != 0 or status.st_gid != 0 or status.st_mode & 0o022:
                owner = f"{status.st_uid}:{status.st_gid} {status.st_mode & 0o777:o}"
                offending.append(f"{directory}/{name} {owner}")
    assert offending == []


def top_level_names(files: list[str]) -> set[str]:
    """The importable names a distribution's files occupy in site-packages."""
    names = {f.split("/")[0].removesuffix(".py") for f in files}
    return {n for n in names if n not in ("..", "__pycache__") and not n.endswith(".dist-info")}


def test_no_module_collides_with_a_dependency(installed: Installed) -> None:
    """The modules are top-level names in the venv: no dependency may own one of them."""
    ours = top_level_names(installed_files(installed))
    code = (
        "import json; from importlib.metadata import distributions;"
        "print(json.dumps({d.metadata['Name']: [str(f) for f in d.files or []]"
        " for d in distributions()}))"
    )
    everyone: dict[str, list[str]] = json.loads(installed.python_says(code))
    collisions = {
        name: sorted(ours & top_level_names(files))
        for name, files in everyone.items()
        if name != DISTRIBUTION and ours & top_level_names(files)
    }
    assert collisions == {}


def test_a_second_run_upgrades_in_place(installed: Installed) -> None:
    """Runs last: the config is kept, modules of the old layout are removed, the unit
    points at the prefix, and the checkout is left as it was."""
    installed.config.write_text(installed.config.read_text() + "# edited by the operator\n")
    (installed.prefix / "stale_module.py").write_text("# copied there by an older install.sh\n")
    before = sorted(path.name for path in REPO.iterdir())
    result = run_install(installed)
    assert result.returncode == 0, result.stdout + result.stderr
    assert installed.config.read_text().endswith("# edited by the operator\n")
    assert installed.config.stat().st_mode & 0o777 == 0o600
    assert not (installed.prefix / "stale_module.py").exists()
    assert sorted(path.name for path in REPO.iterdir()) == before
    assert not list(REPO.glob("*.egg-info"))
    unit = (installed.units / "wg-fleet.service").read_text()
    executable = installed.prefix / ".venv" / "bin" / "wg-fleet"
    assert f"ExecStart={executable} --config {installed.config} " in unit
    if shutil.which("systemd-analyze"):
        verify = subprocess.run(
            ["systemd-analyze", "verify", str(installed.units / "wg-fleet.service")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert verify.stdout + verify.stderr == ""
