"""The request body limit: 413 for a body larger than ``max_bytes``, on every route.

A declared ``Content-Length`` above the limit is refused before anything reads the body; a
body sent in chunks is counted as the app reads it, and refused once it passes the limit.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recorder.api.errors import error_response

__all__ = ["BodyLimit"]


class _TooLarge(HTTPException):
    """Raised from ``receive``: an HTTPException, so that FastAPI, reading a body, lets it
    through as 413 instead of calling it a body it could not parse (400)."""


class BodyLimit:
    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _message(self) -> str:
        return (
            f"the request body is larger than {self.max_bytes} bytes, the server's limit "
            "(the API takes its parameters in the URL)"
        )

    def _refusal(self) -> ASGIApp:
        return error_response(413, "too_large", self._message())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope["headers"]:
            if key == b"content-length":
                declared = value.decode("latin-1").strip()
                if not declared.isdigit() or int(declared) > self.max_bytes:
                    await self._refusal()(scope, receive, send)
                    return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge(413, self._message())
            return message

        async def noted(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, noted)
        except _TooLarge:
            if started:
                raise
            await self._refusal()(scope, receive, send)
