"""files.py: atomic, change-only writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import files
from files import write_if_changed


@pytest.mark.parametrize("mode", [0o600, 0o644])
def test_writes_with_mode(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "out"
    previous = os.umask(0o077)
    try:
        assert write_if_changed(path, "hello\n", mode) is True
    finally:
        os.umask(previous)
    assert path.read_text(encoding="utf-8") == "hello\n"
    assert path.stat().st_mode & 0o7777 == mode


def test_same_content_is_not_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    assert write_if_changed(path, "fd00::2 a.fleet.internal\n", 0o644)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    before = path.stat()
    assert write_if_changed(path, "fd00::2 a.fleet.internal\n", 0o644) is False
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, 1_000_000_000)


def test_changed_content_replaces_file(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    write_if_changed(path, "old\n", 0o644)
    inode = path.stat().st_ino
    with path.open(encoding="utf-8") as reader:  # a reader of the old file keeps it whole
        assert write_if_changed(path, "new\n", 0o644) is True
        assert reader.read() == "old\n"
    assert path.read_text(encoding="utf-8") == "new\n"
    assert path.stat().st_ino != inode
    assert sorted(os.listdir(tmp_path)) == ["hosts"]


def test_changed_mode_alone_rewrites(tmp_path: Path) -> None:
    path = tmp_path / "wg_x.conf"
    path.write_text("[Interface]\n", encoding="utf-8")
    path.chmod(0o644)
    assert write_if_changed(path, "[Interface]\n", 0o600) is True
    assert path.stat().st_mode & 0o7777 == 0o600


def test_non_utf8_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_bytes(b"\xff\xfe")
    assert write_if_changed(path, "text\n", 0o644) is True
    assert path.read_text(encoding="utf-8") == "text\n"


def test_creates_parent_directory(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "hosts"
    assert write_if_changed(path, "x\n", 0o644) is True
    assert path.read_text(encoding="utf-8") == "x\n"
    assert os.listdir(path.parent) == ["hosts"]


def test_failed_write_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "hosts"
    write_if_changed(path, "old\n", 0o644)

    def broken_replace(source: object, target: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space left"):
        write_if_changed(path, "new\n", 0o644)
    assert path.read_text(encoding="utf-8") == "old\n"
    assert os.listdir(tmp_path) == ["hosts"]
