"""Give memory that the process freed back to the operating system.

A pass parses a `wg show dump` of every peer and reloads the fleet's rows: megabytes of
short-lived objects, many allocated in worker threads. glibc keeps what they freed in
its per-thread arenas, so the resident size creeps up over hours although nothing is
leaked. `malloc_trim(0)` after each pass returns those free pages (measured in
bench/soak: see the README's Soak section). Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)


def _load_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_TRIM = _load_trim()


def release_free_memory() -> None:
    """Blocking (a few milliseconds): call it off the event loop."""
    if _TRIM is not None:
        _TRIM(0)
