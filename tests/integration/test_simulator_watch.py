"""Watches on the simulator over real HTTP: a list plus the events after its resourceVersion
equals a later list (DELETED and ADDED as churn replaces pods), bookmarks, initial events,
410 for a stale resourceVersion, the concurrency cap, and timeoutSeconds ending the stream."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from recorder.simulator import ClusterModel, SimulatorConfig, SimulatorServer, create_app
from recorder.simulator.server import MetricsApi
from tests.integration.test_simulator_core import RESOLUTION, T0
from tests.kube_support import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def model(clock: Clock) -> ClusterModel:
    return ClusterModel(SimulatorConfig(nodes=3, pods=40, seed=4, churn_per_hour=30.0), clock)


@pytest.fixture
def client(model: ClusterModel) -> Iterator[httpx.Client]:
    with (
        SimulatorServer(create_app(model, core_api=True)) as server,
        httpx.Client(base_url=server.url, timeout=10) as http,
    ):
        yield http


def watch(client: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every event of a watch that ends by its own timeoutSeconds (1 s)."""
    started = time.monotonic()
    events = []
    query = {"watch": "1", "timeoutSeconds": "1", **params}
    with client.stream("GET", path, params=query) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        events.extend(json.loads(line) for line in response.iter_lines() if line)
    assert time.monotonic() - started < 5, "timeoutSeconds should end the stream"
    return events


def by_key(items: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(i["metadata"]["namespace"], i["metadata"]["name"]): i for i in items}


def test_a_list_plus_its_watch_events_equals_a_later_list(
    client: httpx.Client, clock: Clock
) -> None:
    first = client.get("/api/v1/pods").json()
    state = by_key(first["items"])
    clock.step(10)  # 150 s at 30 churns an hour: several pods replaced, others start running
    events = watch(
        client,
        "/api/v1/pods",
        resourceVersion=first["metadata"]["resourceVersion"],
        allowWatchBookmarks="true",
    )
    kinds = [e["type"] for e in events]
    assert {"ADDED", "DELETED", "MODIFIED", "BOOKMARK"} <= set(kinds)
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert versions == sorted(versions) and versions[0] > int(first["metadata"]["resourceVersion"])
    for event in events:
        obj = event["object"]
        if event["type"] == "BOOKMARK":
            continue
        assert (obj["kind"], obj["apiVersion"]) == ("Pod", "v1")
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        if event["type"] == "DELETED":
            assert key in state and obj["metadata"]["deletionTimestamp"]
            del state[key]
        elif event["type"] == "ADDED":
            assert key not in state
            state[key] = obj
        else:
            assert key in state
            state[key] = obj
    later = client.get("/api/v1/pods").json()
    assert events[-1]["type"] == "BOOKMARK"
    assert (
        events[-1]["object"]["metadata"]["resourceVersion"] == later["metadata"]["resourceVersion"]
    )
    expected = by_key(later["items"])
    assert set(state) == set(expected)
    for key, obj in state.items():
        obj = {**obj}
        obj.pop("kind", None), obj.pop("apiVersion", None)
        assert obj == expected[key]
    # A churned pod: its owner's replacement arrives in the same bucket as its deletion.
    deleted = next(e for e in events if e["type"] == "DELETED")
    owner = deleted["object"]["metadata"]["ownerReferences"][0]["uid"]
    same_bucket = [
        e
        for e in events
        if e["type"] == "ADDED"
        and e["object"]["metadata"]["ownerReferences"][0]["uid"] == owner
        and int(e["object"]["metadata"]["resourceVersion"])
        == int(deleted["object"]["metadata"]["resourceVersion"]) + 1
    ]
    assert len(same_bucket) == 1


def test_without_a_resource_version_the_watch_starts_with_every_object(
    client: httpx.Client,
) -> None:
    listed = client.get("/apis/apps/v1/deployments").json()["items"]
    events = watch(client, "/apis/apps/v1/deployments")
    assert [e["type"] for e in events] == ["ADDED"] * len(listed)
    assert [e["object"]["metadata"]["uid"] for e in events] == [
        d["metadata"]["uid"] for d in listed
    ]


def test_a_field_selector_watch_sees_pods_leave_and_enter_it(
    client: httpx.Client, clock: Clock
) -> None:
    first = client.get("/api/v1/pods?fieldSelector=status.phase%3DPending").json()
    clock.step(10)
    events = watch(
        client,
        "/api/v1/pods",
        fieldSelector="status.phase=Pending",
        resourceVersion=first["metadata"]["resourceVersion"],
    )
    assert {e["type"] for e in events} == {"ADDED", "DELETED"}
    assert all(e["object"]["status"]["phase"] == "Pending" for e in events if e["type"] == "ADDED")


def test_a_stale_resource_version_gets_a_410_error_event(
    client: httpx.Client, clock: Clock
) -> None:
    old = client.get("/api/v1/pods").json()["metadata"]["resourceVersion"]
    clock.step(int(300 / RESOLUTION) + 2)
    events = watch(client, "/api/v1/pods", resourceVersion=old)
    assert len(events) == 1
    status = events[0]["object"]
    assert events[0]["type"] == "ERROR"
    assert (status["kind"], status["reason"], status["code"]) == ("Status", "Expired", 410)
    assert status["message"].startswith(f"too old resource version: {old} (")
    bad = client.get("/api/v1/pods", params={"watch": "1", "resourceVersion": "abc"})
    assert bad.status_code == 400


def test_concurrent_watches_are_capped(model: ClusterModel) -> None:
    api = MetricsApi(model, core_api=True)
    assert api.core is not None
    api.core.watches.limit = 2
    opened = [api.open_watch("GET", "/api/v1/pods", "watch=1") for _ in range(3)]
    assert [getattr(o, "status", 200) for o in opened] == [200, 200, 429]
    assert api.core.watches.active == 2
