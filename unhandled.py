"""The last resort for errors no handler expected: JSON, never Starlette's plain text.

Domain errors (`errors.py`) and invalid requests have handlers of their own; anything
else that escapes a route answers 500 `{"detail": "..."}` and is logged once, with its
traceback. It is not raised further, so uvicorn does not log it a second time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import MutableMapping
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

logger = logging.getLogger(__name__)

DETAIL = "The server met an unexpected error; it has been logged. Try again later."


class JSONErrors:
    """ASGI middleware: an unhandled exception becomes a JSON 500 and one logged traceback."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            logger.exception("unhandled error answering %s %s", scope["method"], scope["path"])
            if started:
                return  # the status line is out: all that is left is to end the response
            body = json.dumps({"detail": DETAIL}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
