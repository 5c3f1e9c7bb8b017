"""Background tasks never fail silently: a done-callback logs what a task ended with.

Every task wg-fleet starts is kept by reference by its owner, which the lifespan starts
and stops (the pruner, the write-behind, the publisher, the registry's workers, the
status cache's refreshes); this callback is the last line for an exception none of them
expected.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

logger = logging.getLogger(__name__)


def report_failure(task: asyncio.Task[Any]) -> None:
    """Log, with its traceback, the exception `task` ended with (not a cancellation)."""
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        logger.error("background task %s failed", task.get_name(), exc_info=error)
