"""The history page and the docs page in a real headless Chromium (Debian's, driven by
Playwright), against the real app over HTTP on a real SQLite history with ``--auth tokens``.

The history page loads without a token, says it needs one, takes one, and draws the chosen
namespace's workloads: the chart's canvas has drawn pixels, no console error, and no request
leaves the loopback host. ``/docs`` renders Swagger UI from the recorder's own assets with every
outside host unreachable. Screenshots go to ``RECORDER_TEST_ARTIFACTS`` (default: the test's
temporary folder); ``RECORDER_README_SCREENSHOT=docs/history-page.png`` writes the README's.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from prometheus_client import CollectorRegistry

from recorder.api.app import AppDeps, create_app
from recorder.api.tokens import TokenAccess
from recorder.domain import DEFAULT_CLUSTER, Batch, Kind, Sample, SeriesKey
from recorder.store import Store, open_store
from recorder.store.objects import ObjectStore
from tests.servers import serving

playwright = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TOKEN = "page-token-0123456789abcdef"
WAIT_MS = 20_000
STEP_MS = 60_000
HOURS = 3
WORKLOADS = {
    "shop": (("Deployment", "web", ("app", "envoy")), ("StatefulSet", "db", ("postgres",))),
    "monitoring": (("Deployment", "grafana", ("grafana",)),),
    "batch": (("Job", "report", ("run",)),),
}
"""namespace -> (workload kind, name, containers); two pods each."""


def _history(store: Store, now_ms: int) -> None:
    """Three hours of a sample a minute for each container and two nodes, shaped like a day's
    load; each pod owned by its workload."""
    start = now_ms - HOURS * 3_600_000
    pods = [
        (ns, f"{name}-{i}", container, kind, name)
        for ns, workloads in WORKLOADS.items()
        for kind, name, containers in workloads
        for i in range(2)
        for container in containers
    ]
    for n, ts in enumerate(range(start, now_ms, STEP_MS)):
        wave = 1 + abs((n % 120) - 60) / 60
        containers = tuple(
            Sample(
                SeriesKey.for_container(ns, pod, container),
                ts,
                30_000,
                int(50_000_000 * (k + 1) * wave),
                (k + 2) * 64 * 2**20 + n * 2**18,
            )
            for k, (ns, pod, container, _, _) in enumerate(pods)
        )
        nodes = tuple(
            Sample(SeriesKey.for_node(f"node-{i}"), ts, 30_000, int(2e9 * wave) + i, 8 * 2**30)
            for i in range(2)
        )
        store.write(Batch(Kind.CONTAINER, containers), now_ms=ts)
        store.write(Batch(Kind.NODE, nodes), now_ms=ts)
    ObjectStore(store.engine, DEFAULT_CLUSTER).record_pods(
        {(ns, pod, kind, name, "Burstable") for ns, pod, _, kind, name in pods}, now_ms=start
    )


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("page")
    (folder / "tokens").write_text(f"{TOKEN},viewer,*\n")
    store = open_store(f"sqlite:///{folder / 'recorder.db'}")
    store.migrate()
    _history(store, int(time.time() * 1000))
    deps = AppDeps(store, CollectorRegistry(), authorizer=TokenAccess(folder / "tokens"))
    try:
        with serving(create_app(deps)) as served:
            yield served
    finally:
        store.close()


@dataclass
class Watch:
    """What a page did: its console errors and uncaught exceptions, and every URL it asked."""

    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def outside(self) -> list[str]:
        return [u for u in self.requests if urlsplit(u).hostname not in ("127.0.0.1", None)]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: .ci/run installs Debian's")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with playwright.sync_playwright() as driver:
        launched = driver.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox"], timeout=WAIT_MS
        )
        try:
            yield launched
        finally:
            launched.close()


def _page(browser: Any) -> tuple[Any, Watch]:
    """A new page whose requests to any host but the loopback one are refused (as offline)."""
    context = browser.new_context(viewport={"width": 1200, "height": 760})
    watch = Watch()
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.on("console", lambda m: watch.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: watch.errors.append(str(error)))
    page.on("request", lambda request: watch.requests.append(request.url))

    def offline(route: Any) -> None:
        request_url = route.request.url
        if urlsplit(request_url).hostname == "127.0.0.1":
            route.continue_()
        else:
            route.abort("internetdisconnected")

    page.route("**/*", offline)
    return page, watch


def _artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("RECORDER_TEST_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


FIRST_COLOR = (0x1F, 0x77, 0xB4)
"""The first line's stroke in page.js (axes and grid are drawn in greys)."""


def _drawn_pixels(page: Any, rgb: tuple[int, int, int] = FIRST_COLOR) -> int:
    """Pixels of the chart's canvas in the colour of a line (within anti-aliasing)."""
    return int(
        page.evaluate(
            """([r, g, b]) => {
              const canvas = document.querySelector('#chart canvas');
              const data = canvas.getContext('2d')
                .getImageData(0, 0, canvas.width, canvas.height).data;
              let drawn = 0;
              for (let i = 0; i < data.length; i += 4) {
                const off = Math.abs(data[i] - r) + Math.abs(data[i + 1] - g)
                  + Math.abs(data[i + 2] - b);
                if (data[i + 3] > 200 && off < 60) drawn += 1;
              }
              return drawn;
            }""",
            list(rgb),
        )
    )


def test_the_history_page_takes_a_token_and_draws_a_namespace(
    browser: Any, url: str, tmp_path: Path
) -> None:
    page, watch = _page(browser)
    page.goto(f"{url}/")
    page.wait_for_selector("body[data-state=unauthorized]")
    assert "needs a bearer token" in page.inner_text("#status")

    page.fill("#token", TOKEN)
    page.click("#auth button[type=submit]")
    page.wait_for_selector("body[data-state=drawn]")
    namespaces = page.eval_on_selector_all(
        "#namespace option", "options => options.map(o => o.value)"
    )
    assert namespaces == ["", "batch", "monitoring", "shop"]
    assert page.get_attribute("body", "data-series") == "3"

    page.select_option("#namespace", "shop")
    page.wait_for_selector("body[data-state=drawn][data-series='2']")
    assert page.inner_text("#title") == (
        'sum by (workload) (recorder_container_cpu_usage_cores{namespace="shop"})'
    )
    legend = page.inner_text(".u-legend")
    assert "workload=web" in legend and "workload=db" in legend, legend
    assert int(page.get_attribute("body", "data-points")) > 2 * HOURS * 50
    assert _drawn_pixels(page) > 500 and _drawn_pixels(page, (0xFF, 0x7F, 0x0E)) > 500
    assert "namespace=shop" in page.evaluate("location.hash")
    assert page.evaluate("sessionStorage.getItem('kube-metrics-recorder.token')") == TOKEN

    page.screenshot(path=str(_artifacts(tmp_path) / "history-page.png"))
    readme = os.environ.get("RECORDER_README_SCREENSHOT")
    if readme:
        page.screenshot(path=readme)
    assert watch.errors == [] or all("401" in e for e in watch.errors), watch.errors
    assert watch.outside() == []
    assert any("/prometheus/api/v1/query_range" in u for u in watch.requests)
    page.context.close()


def test_the_history_page_draws_a_node_from_a_shared_link(
    browser: Any, url: str, tmp_path: Path
) -> None:
    page, watch = _page(browser)
    page.add_init_script(f"sessionStorage.setItem('kube-metrics-recorder.token', '{TOKEN}')")
    page.goto(f"{url}/#scope=node&resource=memory&node=node-1")
    page.wait_for_selector("body[data-state=drawn]")
    assert page.input_value("#node") == "node-1"
    assert page.inner_text("#title") == ('recorder_node_memory_working_set_bytes{node="node-1"}')
    page.hover("#chart .u-over")  # the legend shows the values under the cursor
    assert page.inner_text(".u-legend .u-series:nth-child(2) .u-value") == "8 GiB"
    assert _drawn_pixels(page) > 500
    assert watch.errors == [] and watch.outside() == []
    page.context.close()


def test_the_docs_page_renders_offline(browser: Any, url: str, tmp_path: Path) -> None:
    page, watch = _page(browser)
    page.goto(f"{url}/docs")
    page.wait_for_selector("#operations-default-history_api_v1_history_get, .opblock")
    assert page.locator(".opblock").count() > 5
    page.screenshot(path=str(_artifacts(tmp_path) / "docs-page.png"))
    assert watch.errors == [] and watch.outside() == []
    assert any("/static/vendor/swagger-ui-" in u for u in watch.requests)
    page.context.close()
