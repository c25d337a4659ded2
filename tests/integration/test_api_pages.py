"""The pages and their assets (recorder.api.pages) over real HTTP: content types, caching
headers, no reference to any outside host, the vendored libraries with their licenses, and
every file of ``static/`` packaged in the wheel. The browser checks are in
tests/e2e/test_pages_browser.py."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from recorder.api.app import AppDeps, create_app
from recorder.api.guard import OPEN_PATHS
from recorder.api.pages import ASSET_PATHS, PAGE_PATHS, STATIC_DIRECTORY
from recorder.exporter import SnapshotHolder, build_registry
from recorder.store import open_store
from tests.servers import serving

REPO = Path(__file__).resolve().parents[2]
URL = re.compile(r"""(?:src|href)\s*=\s*["']?([^"' >]+)""", re.IGNORECASE)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """The app over an empty SQLite history: the pages hold no data."""
    store = open_store(f"sqlite:///{tmp_path_factory.mktemp('pages') / 'recorder.db'}")
    store.migrate()
    registry, _ = build_registry(SnapshotHolder())
    try:
        with serving(create_app(AppDeps(store, registry))) as url:
            with httpx.Client(base_url=url, timeout=10) as client:
                yield client
    finally:
        store.close()


def test_every_page_and_asset_is_open_and_only_those(client: httpx.Client) -> None:
    assert PAGE_PATHS == {"/", "/docs", "/docs/oauth2-redirect", "/redoc"}
    assert OPEN_PATHS == {"/livez", "/readyz", "/openapi.json"} | PAGE_PATHS | ASSET_PATHS
    assert all(path.startswith("/static/") for path in ASSET_PATHS)
    assert "/static/page/page.js" in ASSET_PATHS and "/static/page/index.html" in ASSET_PATHS
    assert "/static/" not in OPEN_PATHS and "/static" not in OPEN_PATHS


@pytest.mark.parametrize(
    ("path", "content_type", "cache"),
    [
        ("/", "text/html; charset=utf-8", "no-cache"),
        ("/static/page/page.js", "javascript", "no-cache"),
        ("/static/page/page.css", "text/css", "no-cache"),
        ("/static/vendor/uplot-1.6.32/uPlot.iife.min.js", "javascript", "immutable"),
        ("/static/vendor/uplot-1.6.32/uPlot.min.css", "text/css", "immutable"),
        ("/static/vendor/swagger-ui-5.35.0/swagger-ui-bundle.js", "javascript", "immutable"),
        ("/static/vendor/swagger-ui-5.35.0/favicon-32x32.png", "image/png", "immutable"),
        ("/static/vendor/redoc-2.5.4/redoc.standalone.js", "javascript", "immutable"),
    ],
)
def test_assets_have_their_content_type_and_caching(
    client: httpx.Client, path: str, content_type: str, cache: str
) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert content_type in response.headers["content-type"]
    assert cache in response.headers["cache-control"]
    assert response.headers["x-content-type-options"] == "nosniff"
    if path != "/":
        again = client.get(path, headers={"If-None-Match": response.headers["etag"]})
        assert again.status_code == 304


def test_no_page_loads_anything_from_another_host(client: httpx.Client) -> None:
    for path in sorted(PAGE_PATHS):
        html = client.get(path).text
        loaded = URL.findall(html)
        assert not [u for u in loaded if re.match(r"(?:[a-z]+:)?//", u, re.IGNORECASE)], path
        for asset in loaded:
            if not asset.startswith("#"):
                target = asset if asset.startswith("/") else f"/{asset}"
                assert client.get(target).status_code == 200, (path, asset)
    assert "swagger-ui-bundle.js" in client.get("/docs").text
    assert "fonts.googleapis" not in client.get("/redoc").text


def test_a_missing_or_escaping_asset_is_not_found(client: httpx.Client) -> None:
    for path in ("/static/page/nothing.js", "/static/../pages.py", "/static/%2e%2e/pages.py"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.json()["status"] == "error"


def test_vendored_libraries_ship_unmodified_with_their_license() -> None:
    vendor = STATIC_DIRECTORY / "vendor"
    folders = {folder.name for folder in vendor.iterdir()}
    assert folders == {"uplot-1.6.32", "swagger-ui-5.35.0", "redoc-2.5.4"}
    licenses = {name: (vendor / name / "LICENSE").read_text() for name in folders}
    assert (
        "The MIT License" in licenses["uplot-1.6.32"] and "Leon Sorokin" in licenses["uplot-1.6.32"]
    )
    assert "Apache License" in licenses["swagger-ui-5.35.0"]
    assert "The MIT License" in licenses["redoc-2.5.4"]
    assert (vendor / "uplot-1.6.32" / "uPlot.iife.min.js").read_text().startswith("/*! https://")


def test_the_wheel_ships_every_static_file() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = config["package-data"]["recorder.api"]
    base = STATIC_DIRECTORY.parent
    files = [p.relative_to(base).as_posix() for p in STATIC_DIRECTORY.rglob("*") if p.is_file()]
    assert files
    missing = [f for f in files if not any(fnmatch.fnmatch(f, pattern) for pattern in patterns)]
    assert missing == []
