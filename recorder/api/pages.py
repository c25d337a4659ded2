"""The pages a person opens in a browser: the history page at ``/`` and the API's docs pages
(``/docs``, Swagger UI; ``/redoc``), with every asset they load served by the recorder itself
from ``static/`` (no CDN: clusters are often offline).

``static/page/`` holds the history page (our own HTML, JS and CSS, no build step); it draws
with the Prometheus query API under ``/prometheus/api/v1``. ``static/vendor/<name>-<version>/``
holds libraries as their npm packages ship them, unmodified, with their licenses: uPlot (MIT),
swagger-ui-dist (Apache-2.0), redoc (MIT). A vendored file's path names its version, so it is
cached for a year as immutable; our own files are revalidated on every load (``no-cache`` with
the ETag StaticFiles sets), so an upgraded recorder serves its new page at once.

The pages and their assets hold no data: ``ASSET_PATHS`` and ``PAGE_PATHS`` are exactly the
paths the access guard lets by without a token (``guard.OPEN_PATHS``); the page's data calls
carry the token the user gives it.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import APIRouter
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

__all__ = [
    "ASSET_PATHS",
    "PAGE_PATHS",
    "STATIC_DIRECTORY",
    "STATIC_PREFIX",
    "Assets",
    "pages_router",
]

STATIC_DIRECTORY = Path(__file__).parent / "static"
STATIC_PREFIX = "/static"
UPLOT = f"{STATIC_PREFIX}/vendor/uplot-1.6.32"
SWAGGER_UI = f"{STATIC_PREFIX}/vendor/swagger-ui-5.35.0"
REDOC = f"{STATIC_PREFIX}/vendor/redoc-2.5.4"
TITLE = "kube-metrics-recorder"
OPENAPI_URL = "/openapi.json"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"

IMMUTABLE = "public, max-age=31536000, immutable"
"""A vendored file: its path changes with its version."""
REVALIDATE = "no-cache"
"""Our own files: kept, but checked (ETag) on every load."""

PAGE_PATHS = frozenset({"/", "/docs", OAUTH2_REDIRECT_URL, "/redoc"})
ASSET_PATHS = frozenset(
    f"{STATIC_PREFIX}/{path.relative_to(STATIC_DIRECTORY).as_posix()}"
    for path in STATIC_DIRECTORY.rglob("*")
    if path.is_file()
)
"""Every file under ``static/`` by the path it is served at: fixed when the package is."""


class Assets(StaticFiles):
    """``static/`` with a ``Cache-Control`` on every file and ``nosniff``."""

    def __init__(self) -> None:
        super().__init__(directory=STATIC_DIRECTORY)

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        vendored = Path(full_path).relative_to(STATIC_DIRECTORY).parts[0] == "vendor"
        response.headers["Cache-Control"] = IMMUTABLE if vendored else REVALIDATE
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def pages_router() -> APIRouter:
    """``/`` (the history page), ``/docs`` and ``/redoc`` over the local assets."""
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    async def history_page() -> FileResponse:
        return FileResponse(
            STATIC_DIRECTORY / "page" / "index.html",
            media_type="text/html; charset=utf-8",
            headers={"Cache-Control": REVALIDATE, "X-Content-Type-Options": "nosniff"},
        )

    @router.get("/docs")
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=OPENAPI_URL,
            title=f"{TITLE} - API",
            swagger_js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js",
            swagger_css_url=f"{SWAGGER_UI}/swagger-ui.css",
            swagger_favicon_url=f"{SWAGGER_UI}/favicon-32x32.png",
            oauth2_redirect_url=OAUTH2_REDIRECT_URL,
            # No badge fetched from validator.swagger.io: the page makes no outside request.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @router.get(OAUTH2_REDIRECT_URL)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @router.get("/redoc")
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=OPENAPI_URL,
            title=f"{TITLE} - API",
            redoc_js_url=f"{REDOC}/redoc.standalone.js",
            redoc_favicon_url=f"{SWAGGER_UI}/favicon-32x32.png",
            with_google_fonts=False,
        )

    return router
