"""The ``cluster`` filter of the history API and of ``recorder query``/``recorder top``, and
``group_by=cluster``, over two clusters that hold the same pod and node names, on SQLite and
on PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from recorder.api.app import AppDeps, create_app
from recorder.cli import main
from recorder.domain import Batch, Kind, Sample, SeriesKey
from recorder.store import Store
from tests.servers import serving

NOW = 1_714_557_600.0  # 2024-05-01T10:00:00Z
T0 = int(NOW * 1000) - 60_000
CPU = {"a": 100_000_000, "b": 200_000_000}  # nanocores: 0.1 and 0.2 cores
MEMORY = {"a": 1_000, "b": 2_000}


@pytest.fixture
def store(store: Store) -> Store:
    """The shared store (tests/conftest.py) with the same container, pod labels and node in
    clusters ``a`` and ``b``, each with its own values."""
    for cluster in ("a", "b"):
        key = SeriesKey.for_container("shop", "web", "app", cluster=cluster)
        store.write(
            Batch(
                Kind.CONTAINER,
                (Sample(key, T0, 30_000, CPU[cluster], MEMORY[cluster]),),
                {("shop", "web"): {"app": "web", "zone": cluster}},
                cluster=cluster,
            ),
            now_ms=T0,
        )
        node = SeriesKey.for_node("n1", cluster=cluster)
        store.write(
            Batch(
                Kind.NODE,
                (Sample(node, T0, 30_000, 10 * CPU[cluster], 10 * MEMORY[cluster]),),
                cluster=cluster,
            ),
            now_ms=T0,
        )
    return store


@pytest.fixture
def client(store: Store) -> Iterator[httpx.Client]:
    deps = AppDeps(store, CollectorRegistry(), clock=lambda: NOW)
    with serving(create_app(deps)) as url, httpx.Client(base_url=url) as client:
        yield client


def get_data(client: httpx.Client, path: str, **query: str) -> Any:
    response = client.get(path, params=query)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success"
    return body["data"]


def history(client: httpx.Client, **query: str) -> list[tuple[dict[str, str], list[Any]]]:
    series = get_data(client, "/api/v1/history", **query)["series"]
    return [(s["labels"], s["points"]) for s in series]


@pytest.mark.parametrize("cluster", ["a", "b"])
def test_history_of_one_cluster(client: httpx.Client, cluster: str) -> None:
    assert history(client, resource="cpu", cluster=cluster) == [
        (
            {"cluster": cluster, "namespace": "shop", "pod": "web", "container": "app"},
            [[T0 / 1000, CPU[cluster] / 1e9]],
        )
    ]
    assert history(client, resource="memory", kind="node", cluster=cluster) == [
        ({"cluster": cluster, "node": "n1"}, [[T0 / 1000, 10 * MEMORY[cluster]]])
    ]
    assert history(client, resource="memory", kind="pod", namespace="shop", cluster=cluster) == [
        ({"cluster": cluster, "namespace": "shop", "pod": "web"}, [[T0 / 1000, MEMORY[cluster]]])
    ]
    # the selector matches the pod labels of the cluster's own pod
    assert history(client, resource="cpu", cluster=cluster, selector=f"zone={cluster}")
    other = "b" if cluster == "a" else "a"
    assert history(client, resource="cpu", cluster=cluster, selector=f"zone={other}") == []


def test_history_without_the_filter_keeps_the_clusters_apart(client: httpx.Client) -> None:
    found = history(client, resource="memory")
    assert sorted((labels["cluster"], points) for labels, points in found) == [
        ("a", [[T0 / 1000, MEMORY["a"]]]),
        ("b", [[T0 / 1000, MEMORY["b"]]]),
    ]
    csv_lines = client.get(
        "/api/v1/history", params={"resource": "memory", "cluster": "b", "format": "csv"}
    ).text.splitlines()
    assert csv_lines[0].startswith("cluster,")
    assert [line.split(",")[0] for line in csv_lines[1:]] == ["b"]


def test_an_unknown_cluster_has_no_series(client: httpx.Client) -> None:
    assert history(client, resource="cpu", cluster="elsewhere") == []
    assert get_data(client, "/api/v1/series", cluster="elsewhere") == []


def test_series_of_one_cluster(client: httpx.Client) -> None:
    for kind in ("container", "node"):
        everything = get_data(client, "/api/v1/series", kind=kind)
        assert sorted(s["labels"]["cluster"] for s in everything) == ["a", "b"]
        only = get_data(client, "/api/v1/series", kind=kind, cluster="a")
        assert [s["labels"]["cluster"] for s in only] == ["a"]
        if kind == "container":
            assert only[0]["labels"] == {
                "cluster": "a",
                "namespace": "shop",
                "pod": "web",
                "container": "app",
            }
            assert only[0]["podLabels"] == {"app": "web", "zone": "a"}
        else:
            assert only[0]["labels"] == {"cluster": "a", "node": "n1"}


def groups(client: httpx.Client, **query: str) -> dict[str, tuple[int, float]]:
    data = get_data(client, "/api/v1/summary", start=str(T0 / 1000 - 30), end=str(NOW), **query)
    return {g["group"]: (g["series"], g["memory"]["max"]) for g in data["groups"]}


def test_summary_groups_by_cluster_and_filters_by_it(client: httpx.Client) -> None:
    assert groups(client, group_by="cluster") == {"a": (1, MEMORY["a"]), "b": (1, MEMORY["b"])}
    assert groups(client, group_by="cluster", kind="node") == {
        "a": (1, 10 * MEMORY["a"]),
        "b": (1, 10 * MEMORY["b"]),
    }
    assert groups(client, group_by="cluster", kind="pod", cluster="b") == {"b": (1, MEMORY["b"])}
    assert groups(client, group_by="namespace", cluster="a") == {"shop": (1, MEMORY["a"])}
    assert groups(client, group_by="node", kind="node", cluster="b") == {
        "n1": (1, 10 * MEMORY["b"])
    }


@pytest.mark.parametrize(
    "route", ["/api/v1/history?resource=cpu", "/api/v1/series?", "/api/v1/summary?group_by=pod"]
)
@pytest.mark.parametrize("value", ["x" * 64, "a%00b"])
def test_a_bad_cluster_gets_the_error_envelope(
    client: httpx.Client, route: str, value: str
) -> None:
    response = client.get(f"{route}&cluster={value}")
    assert response.status_code == 400
    body = response.json()
    assert body["status"] == "error" and body["errorType"] == "bad_data"
    assert body["error"].startswith("cluster: ")


def test_the_openapi_document_has_the_cluster_parameter(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for route in ("/api/v1/history", "/api/v1/series", "/api/v1/summary"):
        [cluster] = [p for p in paths[route]["get"]["parameters"] if p["name"] == "cluster"]
        assert cluster["in"] == "query" and not cluster["required"]
        assert cluster["schema"]["anyOf"][0]["maxLength"] == 63
    [group_by] = [
        p for p in paths["/api/v1/summary"]["get"]["parameters"] if p["name"] == "group_by"
    ]
    assert "cluster" in group_by["schema"]["pattern"]


def test_cli_query_and_top_take_a_cluster_filter(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    url = store.engine.url.render_as_string(hide_password=False)
    window = ["--start", str(T0 / 1000), "--end", str(NOW)]
    query = ["query", "--database-url", url, "--resource", "memory", *window]
    assert main([*query, "--cluster", "b", "--format", "json"]) == 0
    series = json.loads(capsys.readouterr().out)["data"]["series"]
    assert [(s["labels"]["cluster"], s["points"]) for s in series] == [
        ("b", [[T0 / 1000, MEMORY["b"]]])
    ]
    assert main([*query, "--format", "csv"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert sorted(row.split(",")[0] for row in rows) == ["a", "b"]

    top = ["top", "pods", "-A", "--since", "2m", "--end", str(NOW), "--database-url", url]
    assert main([*top, "--cluster", "a"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[1].split()[:2] == ["shop", "web"]
    assert lines[1].split()[2] == "100m"  # cluster a's 0.1 cores, not b's 0.2
    assert main([*top, "--cluster", "nowhere"]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "of cluster nowhere" in captured.err
