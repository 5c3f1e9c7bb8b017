from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Lab, prerequisites_missing

REQUIRED = os.environ.get("WG_FLEET_REQUIRE_E2E") == "1"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """A server namespace with a bridge; everything made is removed afterwards."""
    missing = prerequisites_missing()
    if missing:
        if REQUIRED:
            pytest.fail(f"WG_FLEET_REQUIRE_E2E=1 but {missing}")
        pytest.skip(missing)
    tmp_path.chmod(0o755)
    lab = Lab(tmp_path)
    try:
        yield lab
    finally:
        lab.close()
