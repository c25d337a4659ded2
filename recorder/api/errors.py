"""The HTTP API's error envelope and what answers with it.

Every error is ``{"status": "error", "errorType": ..., "error": ...}``: client input gets 4xx
(``bad_data``, ``not_found``), an overloaded limiter, an unavailable database or a query past
its deadline get 503, and anything else that escapes a handler is a bug, logged (a few times
a minute at most) and answered 500 by ``CatchAll``. A database failure's message names the
database (user, host, port, name): it goes to the log, and the client gets its class only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recorder.api.httpmetrics import mark_shed
from recorder.api.limits import LogLimiter, Overloaded
from recorder.api.visibility import Forbidden
from recorder.errors import (
    AccessReviewError,
    QueryError,
    QueryTimeout,
    StoreError,
    StoreUnavailable,
)
from recorder.settings import invalid_value_words

__all__ = ["CatchAll", "error_response", "install_error_handlers"]

log = logging.getLogger(__name__)


def error_response(
    status: int, error_type: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The error envelope with ``status``."""
    return JSONResponse(
        {"status": "error", "errorType": error_type, "error": message},
        status_code=status,
        headers=headers,
    )


_SHOWN_INPUT_CHARS = 80


def _problem(err: Mapping[str, Any]) -> str:
    """One invalid parameter in our words (never the validator's own): the parameter as the
    client wrote it, what it may be, and the value it sent (cut short)."""
    name = ".".join(str(p) for p in err["loc"][1:]) or str(err["loc"][0])
    given = str(err.get("input", ""))
    if len(given) > _SHOWN_INPUT_CHARS:
        given = given[:_SHOWN_INPUT_CHARS] + "..."
    shown = f", got {given!r}"
    words = invalid_value_words(err.get("type", ""), err.get("ctx") or {}, shown)
    return f"{name}: {words or 'is not valid' + shown}"


def _nothing(_reason: str) -> None:
    pass


def install_error_handlers(app: FastAPI, *, on_denial: Callable[[str], None] = _nothing) -> None:
    """Answer invalid parameters, bad queries, timeouts, an unavailable database, an
    overloaded limiter, a caller asking for what it may not read and access that cannot be
    decided with the error envelope (``on_denial`` is told the last two: ``forbidden``,
    ``review_error``)."""

    @app.exception_handler(Forbidden)
    async def _forbidden(_request: Request, exc: Forbidden) -> JSONResponse:
        on_denial("forbidden")
        return error_response(403, "forbidden", str(exc))

    review_logs = LogLimiter()

    @app.exception_handler(AccessReviewError)
    async def _undecided(_request: Request, exc: AccessReviewError) -> JSONResponse:
        on_denial("review_error")
        if review_logs.allow("review") is not None:
            log.warning("access could not be decided: %s", exc)
        return error_response(
            503, "unavailable", f"access control cannot decide now: {exc}", {"Retry-After": "5"}
        )

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, "bad_data", "; ".join(map(_problem, exc.errors())))

    @app.exception_handler(HTTPException)
    async def _http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        error_type = {404: "not_found", 413: "too_large"}.get(exc.status_code, "bad_data")
        return error_response(exc.status_code, error_type, str(exc.detail), exc.headers)

    @app.exception_handler(QueryError)
    async def _bad_query(_request: Request, exc: QueryError) -> JSONResponse:
        return error_response(400, "bad_data", str(exc))

    @app.exception_handler(QueryTimeout)
    async def _timeout(_request: Request, exc: QueryTimeout) -> JSONResponse:
        return error_response(503, "timeout", str(exc))

    store_logs = LogLimiter()

    @app.exception_handler(StoreError)
    async def _store_down(_request: Request, exc: StoreError) -> JSONResponse:
        dropped = store_logs.allow(type(exc).__name__)
        if dropped is not None:
            more = f" ({dropped} more not logged)" if dropped else ""
            log.error("a history read failed: %s%s", exc, more)
        what = (
            "the database is unreachable or busy"
            if isinstance(exc, StoreUnavailable)
            else f"the database failed ({type(exc).__name__})"
        )
        return error_response(503, "unavailable", f"{what}; try again later (details in the log)")

    @app.exception_handler(Overloaded)
    async def _overloaded(request: Request, exc: Overloaded) -> JSONResponse:
        mark_shed(request.scope)
        headers = {"Retry-After": str(exc.retry_after_seconds)}
        return error_response(503, "unavailable", str(exc), headers)


class CatchAll:
    """Turns an exception that escaped every handler into a logged 500 with the error
    envelope. Client input never gets here (tests/integration/test_api_fuzz.py): what does is
    a bug, logged to ``log`` with its traceback a few times a minute at most."""

    def __init__(self, app: ASGIApp, log: logging.Logger) -> None:
        self.app = app
        self.log = log
        self.logs = LogLimiter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_and_note(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception as exc:
            dropped = self.logs.allow(type(exc).__name__)
            if dropped is not None:
                self.log.error(
                    "bug: %s %s failed with %s%s",
                    scope.get("method"),
                    scope.get("path"),
                    type(exc).__name__,
                    f" ({dropped} more not logged)" if dropped else "",
                    exc_info=exc,
                )
            if started:
                raise  # half a response is out: the server closes the connection
            response = error_response(
                500,
                "internal",
                "the recorder failed on this request (a bug, logged with its details): "
                "please report it with the request and the log line",
            )
            await response(scope, receive, send)
