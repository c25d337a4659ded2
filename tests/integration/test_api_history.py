"""The history routes (``recorder.api.history``) through HTTP over a real store, on SQLite and
on PostgreSQL: JSON in cores and bytes, time ranges, CSV (RFC 3339 or unix times), the
response bound, and the summary over a window its data only partly covers."""

from __future__ import annotations

import csv
import io
import json

import httpx
import pytest

from recorder.api.app import AppDeps, create_app
from recorder.domain import DEFAULT_CLUSTER, Batch, Kind, Sample, SeriesKey
from recorder.exporter import SnapshotHolder, build_registry
from recorder.query import engine
from recorder.store import Store
from tests.api_support import NOW, T0
from tests.servers import serving


def test_history_json_in_cores_and_bytes(client: httpx.Client) -> None:
    response = client.get("/api/v1/history", params={"resource": "cpu", "namespace": "shop"})
    assert response.status_code == 200
    assert response.json() == {
        "status": "success",
        "data": {
            "resource": "cpu",
            "unit": "cores",
            "kind": "container",
            "tier": "raw",
            "series": [
                {
                    "labels": {
                        "cluster": DEFAULT_CLUSTER,
                        "namespace": "shop",
                        "pod": "web",
                        "container": "app",
                    },
                    "points": [[T0 / 1000, 0.487558164], [T0 / 1000 + 15, 1e-9]],
                }
            ],
        },
    }
    nodes = client.get("/api/v1/history?resource=memory&kind=node").json()["data"]
    assert nodes["unit"] == "bytes"
    assert nodes["series"] == [
        {"labels": {"cluster": DEFAULT_CLUSTER, "node": "n1"}, "points": [[T0 / 1000, 9]]}
    ]


def test_history_time_range_rfc3339_and_unix(client: httpx.Client) -> None:
    start = "2024-05-01T09:59:10Z"  # after T0 (09:59:00), before T0 + 15 s
    found = client.get(
        "/api/v1/history", params={"resource": "memory", "pod": "web", "start": start}
    ).json()["data"]["series"]
    assert found[0]["points"] == [[T0 / 1000 + 15, 2]]
    found = client.get(
        "/api/v1/history",
        params={"resource": "memory", "pod": "web", "start": T0 / 1000, "end": T0 / 1000},
    ).json()["data"]["series"]
    assert found[0]["points"] == [[T0 / 1000, 2**30]]


def test_history_csv_times_are_rfc3339_or_unix_seconds(client: httpx.Client) -> None:
    response = client.get("/api/v1/history?resource=cpu&kind=node&format=csv")
    assert response.headers["content-type"].startswith("text/csv")
    assert T0 == 1_714_557_540_000
    assert response.text == (
        f"cluster,node,timestamp,cpu_cores\n{DEFAULT_CLUSTER},n1,2024-05-01T09:59:00Z,2.25\n"
    )
    unix = client.get("/api/v1/history?resource=cpu&kind=node&format=csv&time_format=unix")
    assert list(csv.reader(io.StringIO(unix.text))) == [
        ["cluster", "node", "timestamp", "cpu_cores"],
        [DEFAULT_CLUSTER, "n1", str(T0 / 1000), "2.25"],
    ]
    bad = client.get("/api/v1/history?resource=cpu&format=csv&time_format=iso")
    assert bad.status_code == 400 and "time_format" in bad.json()["error"]


def test_too_many_points_is_a_400_not_an_unbounded_response(api_store: Store) -> None:
    registry, _ = build_registry(SnapshotHolder())
    deps = AppDeps(api_store, registry, clock=lambda: NOW, max_points=1)
    with serving(create_app(deps)) as url, httpx.Client(base_url=url) as client:
        response = client.get("/api/v1/history?resource=cpu")
    assert response.status_code == 400
    assert "the query matches more than 1 points" in response.json()["error"]


def test_raw_history_answered_a_slice_of_series_at_a_time_is_the_whole_answer(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The raw JSON answer reads and renders a few series at a time (memory): the same bytes
    as the whole answer rendered at once, head rows and chunks alike, pods included, and the
    point bound still counts every slice's points."""
    keys = [SeriesKey.for_container("shop", f"web-{i}", c) for i in range(5) for c in ("a", "b")]
    for ts in range(T0, T0 + 8 * 15_000, 15_000):
        samples = tuple(Sample(k, ts, 15_000, 10**6 * (n + 1), ts + n) for n, k in enumerate(keys))
        store.write(Batch(Kind.CONTAINER, samples, {}), now_ms=ts)
    store.maintain(now_ms=T0 + 4 * 3_600_000, grace_ms=0)  # some chunks, ...
    samples = tuple(Sample(k, T0 + 200_000, 15_000, 7, 7) for k in keys[:3])
    store.write(Batch(Kind.CONTAINER, samples, {}), now_ms=T0 + 200_000)  # ... some head rows
    registry, _ = build_registry(SnapshotHolder())
    deps = AppDeps(store, registry, clock=lambda: T0 + 300_000, max_points=10_000)
    end = (T0 + 300_000) / 1000
    asked = [
        {"resource": r, "kind": kind, "start": T0 / 1000, "end": end}
        for r in ("cpu", "memory")
        for kind in ("container", "pod")
    ]
    with serving(create_app(deps)) as url, httpx.Client(base_url=url) as client:
        whole = [client.get("/api/v1/history", params=p).content for p in asked]
        monkeypatch.setattr(engine, "RAW_SLICE_UNITS", 3)
        sliced = [client.get("/api/v1/history", params=p).content for p in asked]
    assert sliced == whole
    series = json.loads(whole[0])["data"]["series"]
    assert len(series) == 10 and sum(len(s["points"]) for s in series) == 83
    deps = AppDeps(store, registry, clock=lambda: T0 + 300_000, max_points=82)
    with serving(create_app(deps)) as url, httpx.Client(base_url=url) as client:
        refused = client.get("/api/v1/history", params=asked[0])
    assert refused.status_code == 400
    assert "more than 82 points" in refused.json()["error"]


def test_summary_over_a_half_covered_window(store: Store) -> None:
    """A pod with samples in the first hour of a two-hour window: avg is the mean of that hour,
    avgOverWindow half of it, coverage one half."""
    start = 1_714_521_600_000  # 2024-05-01T00:00:00Z
    key = SeriesKey.for_container("shop", "web", "app")
    samples = [
        Sample(key, start + i * 30_000, 30_000, 10**8 * (1 + i % 4), 2**20 * (100 + i % 5))
        for i in range(120)
    ]
    store.write(Batch(Kind.CONTAINER, tuple(samples)), now_ms=samples[-1].timestamp_ms)
    store.maintain(now_ms=start + 3 * 3_600_000, grace_ms=0)  # the hour is a chunk now
    registry, _ = build_registry(SnapshotHolder())
    deps = AppDeps(store, registry, clock=lambda: start / 1000 + 3 * 3600)
    window = {"start": str(start / 1000), "end": str(start / 1000 + 2 * 3600)}
    with serving(create_app(deps)) as url, httpx.Client(base_url=url) as client:
        response = client.get("/api/v1/summary", params={"group_by": "pod", **window})
    assert response.status_code == 200
    (group,) = response.json()["data"]["groups"]
    assert group["group"] == "shop/web"
    cpu_mean = sum(s.cpu_nanocores for s in samples) / len(samples) / 1e9  # 0.25 cores
    memory_mean = sum(s.memory_bytes for s in samples) / len(samples)
    for part, mean in ((group["cpu"], cpu_mean), (group["memory"], memory_mean)):
        assert part["coverage"] == pytest.approx(0.5)
        assert part["avg"] == pytest.approx(mean, rel=1e-12)
        assert part["avgOverWindow"] == pytest.approx(mean / 2, rel=1e-12)
        assert part["samples"] == 120
    assert group["cpu"]["coreHours"] == pytest.approx(cpu_mean * 1.0)  # one hour of 0.25 cores


def test_a_summary_of_days_is_snapped_to_whole_days_and_says_so(store: Store) -> None:
    """Three days of samples, rolled up; a 2-day window ending mid-day answers the two whole
    days before, from rollups, exactly as those days asked for explicitly; the response says
    it was snapped."""
    day0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z
    key = SeriesKey.for_container("shop", "web", "app")
    samples = [
        Sample(key, day0 + i * 600_000, 600_000, 10**8 * (1 + i % 7), 2**20 * (100 + i % 5))
        for i in range(3 * 144)
    ]
    store.write(Batch(Kind.CONTAINER, tuple(samples)), now_ms=samples[-1].timestamp_ms)
    store.maintain(now_ms=day0 + 4 * 86_400_000, grace_ms=0)  # chunks and day rollups
    registry, _ = build_registry(SnapshotHolder())
    deps = AppDeps(store, registry, clock=lambda: day0 / 1000 + 4 * 86400)
    asked = {"start": str(day0 / 1000 + 13 * 3600), "end": str(day0 / 1000 + 2 * 86400 + 13 * 3600)}
    days = {"start": str(day0 / 1000), "end": str(day0 / 1000 + 2 * 86400 - 0.001)}
    with serving(create_app(deps)) as url, httpx.Client(base_url=url) as client:
        snapped = client.get("/api/v1/summary", params={"group_by": "pod", **asked}).json()
        whole = client.get("/api/v1/summary", params={"group_by": "pod", **days}).json()
        short = client.get(
            "/api/v1/summary",
            params={"group_by": "pod", "start": asked["start"], "end": str(day0 / 1000 + 86400)},
        ).json()
    data = snapped["data"]
    assert (data["start"], data["end"]) == (day0 / 1000, day0 / 1000 + 2 * 86400 - 0.001)
    assert data["snapped"] == {"start": float(asked["start"]), "end": float(asked["end"])}
    assert data["note"] == (
        "the window was snapped to whole UTC days: 2024-05-01T00:00:00Z .. "
        "2024-05-02T23:59:59.999Z (asked: 2024-05-01T13:00:00Z .. 2024-05-03T13:00:00Z), so "
        "day rollups answer it"
    )
    assert data["groups"] == whole["data"]["groups"]
    assert data["groups"][0]["cpu"]["samples"] == 2 * 144
    assert "note" not in whole["data"] and "note" not in short["data"]
