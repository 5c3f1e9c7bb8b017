"""Atomic writes of the files other programs read: hosts files and WireGuard configs."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_if_changed(path: Path, content: str, mode: int) -> bool:
    """Replace `path` with `content` atomically unless it already holds exactly that.

    The new text goes to a dot-prefixed temporary file in the same directory (readers
    such as dnsmasq's `hostsdir` ignore dot files), is flushed to disk, given `mode`
    and renamed over `path`. Returns whether the file was written.
    """
    try:
        if path.read_text(encoding="utf-8") == content and (path.stat().st_mode & 0o7777) == mode:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return True
