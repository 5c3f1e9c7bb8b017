"""Refuse request bodies over 16 KiB before they are read in full."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY = 16 * 1024
TOO_LARGE = JSONResponse(
    {"detail": f"The request body is larger than {MAX_BODY} bytes."},
    status_code=413,
    headers={"Connection": "close"},
)


class BodyTooLarge(HTTPException):
    """Raised while a body streams in. An HTTPException, so that FastAPI — which turns
    any other error met while reading a body into a 400 — lets it through as a 413."""

    def __init__(self) -> None:
        super().__init__(413, f"The request body is larger than {MAX_BODY} bytes.")


class BodySizeLimit:
    """ASGI middleware: 413 for a declared or streamed body over `MAX_BODY` bytes."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await TOO_LARGE(scope, receive, send)
            return
        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not response_started:
                await TOO_LARGE(scope, receive, send)
