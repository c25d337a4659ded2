"""``recorder top`` (recorder/cli/top.py) on SQLite and PostgreSQL: kubectl's flags, columns,
order and errors, JSON and CSV, and a pod's value over a window equal to what
``/api/v1/history?kind=pod`` answers for that window, before compaction, after it, and once
only statistics are left."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

import httpx
import pytest

from recorder.api.app import AppDeps, create_app
from recorder.cli import main
from recorder.domain import DEFAULT_CLUSTER, Batch, Kind, Sample, SeriesKey
from recorder.exporter import SnapshotHolder, build_registry
from recorder.stats.sketch import exact_quantile
from recorder.store import Store, schema
from recorder.timeutil import DAY_MS, HOUR_MS, MINUTE_MS
from tests.retention_support import expire_full_resolution
from tests.servers import serving

T0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z, a day (and 3-hour) boundary
END = T0 + HOUR_MS
MI = 2**20
M = 10**6  # nanocores in a millicore

# --- a small cluster with constant usage: every aggregation of a row is its value -----------

CONTAINERS = {  # (namespace, pod, container): (CPU nanocores, memory bytes)
    ("default", "a", "app"): (100 * M, 100 * MI),
    ("default", "b", "app"): (300 * M, 50 * MI),
    ("shop", "web", "app"): (200 * M, 200 * MI),
    ("shop", "web", "sidecar"): (50 * M, 20 * MI),
    ("shop", "cart", "app"): (400 * M, 10 * MI),
}
LABELS = {
    ("default", "a"): {"app": "a"},
    ("default", "b"): {"app": "b"},
    ("shop", "web"): {"app": "web", "tier": "front"},
    ("shop", "cart"): {"app": "cart", "tier": "back"},
}
NODES = {"n1": (1000 * M, 1024 * MI), "n2": (2000 * M, 512 * MI)}


def write_cluster(store: Store) -> str:
    """An hour of samples a minute apart from ``T0``; the database's URL."""
    for ts in range(T0, END, MINUTE_MS):
        containers = tuple(
            Sample(SeriesKey.for_container(*key), ts, 60_000, cpu, memory)
            for key, (cpu, memory) in CONTAINERS.items()
        )
        store.write(Batch(Kind.CONTAINER, containers, LABELS), now_ms=ts)
        nodes = tuple(
            Sample(SeriesKey.for_node(node), ts, 60_000, cpu, memory)
            for node, (cpu, memory) in NODES.items()
        )
        store.write(Batch(Kind.NODE, nodes), now_ms=ts)
    return store.engine.url.render_as_string(hide_password=False)


@pytest.fixture
def url(store: Store) -> str:
    return write_cluster(store)


def top(
    capsys: pytest.CaptureFixture[str], url: str, *args: str, end: int = END
) -> tuple[int, str, str]:
    code = main(["top", *args, "--database-url", url, "--end", str(end / 1000)])
    out, err = capsys.readouterr()
    return code, out, err


WINDOW = "# avg over 2024-05-01T00:00:00Z .. 2024-05-01T01:00:00Z\n"


def test_pods_of_the_default_namespace_in_name_order(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for what in ("pod", "pods", "po"):
        code, out, err = top(capsys, url, what)
        assert code == 0
        assert out == (
            "NAME   CPU(cores)   MEMORY(bytes)\n"
            "a      100m         100Mi\n"
            "b      300m         50Mi\n"
        )
        assert err == WINDOW  # what the values are: on stderr, so stdout is kubectl's table


def test_namespace_all_namespaces_and_sort_by(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert top(capsys, url, "pod", "-n", "shop")[1] == (
        "NAME   CPU(cores)   MEMORY(bytes)\ncart   400m         10Mi\nweb    250m         220Mi\n"
    )
    assert top(capsys, url, "pod", "--namespace", "shop", "--sort-by", "memory")[1] == (
        "NAME   CPU(cores)   MEMORY(bytes)\nweb    250m         220Mi\ncart   400m         10Mi\n"
    )
    code, out, _ = top(capsys, url, "pods", "-A", "--sort-by", "cpu")
    assert code == 0
    assert out == (
        "NAMESPACE   NAME   CPU(cores)   MEMORY(bytes)\n"
        "shop        cart   400m         10Mi\n"
        "default     b      300m         50Mi\n"
        "shop        web    250m         220Mi\n"
        "default     a      100m         100Mi\n"
    )
    by_name = top(capsys, url, "pods", "--all-namespaces")[1].splitlines()
    assert [line.split()[:2] for line in by_name[1:]] == [
        ["default", "a"],
        ["default", "b"],
        ["shop", "cart"],
        ["shop", "web"],
    ]


def test_nodes(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    for what in ("node", "nodes", "no"):
        code, out, err = top(capsys, url, what, "--sort-by", "memory")
        assert code == 0
        assert out == (
            "NAME   CPU(cores)   MEMORY(bytes)\n"
            "n1     1000m        1024Mi\n"
            "n2     2000m        512Mi\n"
        )
        assert err == WINDOW
    assert top(capsys, url, "node", "n2")[1] == (
        "NAME   CPU(cores)   MEMORY(bytes)\nn2     2000m        512Mi\n"
    )


def test_a_named_pod_or_node_or_a_clear_error(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert top(capsys, url, "pod", "web", "-n", "shop")[1] == (
        "NAME   CPU(cores)   MEMORY(bytes)\nweb    250m         220Mi\n"
    )
    code, out, err = top(capsys, url, "pod", "web")  # not in the default namespace
    assert (code, out) == (2, "")
    assert err == (
        "recorder top: error: no metrics recorded for pod 'web' in namespace default between "
        "2024-05-01T00:00:00Z and 2024-05-01T01:00:00Z (--since 1h): check the name and the "
        "namespace (-n), or widen --since\n"
    )
    code, out, err = top(capsys, url, "node", "n3", "--since", "30m")
    assert (code, out) == (2, "")
    assert err.startswith("recorder top: error: no metrics recorded for node 'n3' between ")
    assert err.count("\n") == 1 and "Traceback" not in err
    # Before the pod's first sample: nothing in the window is not an empty table either.
    code, _, err = top(capsys, url, "pod", "web", "-n", "shop", "--since", "1h", end=T0 - 1)
    assert code == 2 and "no metrics recorded for pod 'web' in namespace shop" in err


def test_containers_one_row_each_on_their_own_series(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert top(capsys, url, "pod", "-n", "shop", "--containers")[1] == (
        "POD    NAME      CPU(cores)   MEMORY(bytes)\n"
        "cart   app       400m         10Mi\n"
        "web    app       200m         200Mi\n"
        "web    sidecar   50m          20Mi\n"
    )
    assert top(capsys, url, "pod", "web", "-A", "--containers")[0] == 2  # NAME needs -n
    out = top(capsys, url, "pod", "-A", "--containers", "--sort-by", "memory", "--no-headers")[1]
    assert out.splitlines()[:2] == [
        "shop      web    app       200m   200Mi",
        "default   a      app       100m   100Mi",
    ]


def test_no_headers_and_sum(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = top(capsys, url, "pod", "-n", "shop", "--no-headers")
    assert (code, err) == (0, "")  # no header, no window line: rows only, as kubectl
    assert out == "cart   400m   10Mi\nweb    250m   220Mi\n"
    assert top(capsys, url, "pod", "-A", "--sum")[1] == (
        "NAMESPACE   NAME   CPU(cores)   MEMORY(bytes)\n"
        "default     a      100m         100Mi\n"
        "default     b      300m         50Mi\n"
        "shop        cart   400m         10Mi\n"
        "shop        web    250m         220Mi\n"
        "                   ________     ________\n"
        "                   1050m        380Mi\n"
    )


def test_selector(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = top(capsys, url, "pod", "-A", "-l", "tier=front")[1]
    assert [line.split()[:2] for line in out.splitlines()[1:]] == [["shop", "web"]]
    out = top(capsys, url, "pod", "-n", "shop", "--selector", "tier in (front,back)")[1]
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["cart", "web"]


def test_every_row_unless_a_limit_that_says_what_it_hides(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert len(top(capsys, url, "pod", "-A")[1].splitlines()) == 1 + 4
    code, out, err = top(capsys, url, "pod", "-A", "--sort-by", "cpu", "--limit", "1")
    assert code == 0
    assert out.splitlines()[1:] == ["shop        cart   400m         10Mi"]
    assert err == WINDOW + "3 more pods not shown (--limit 1)\n"
    err = top(capsys, url, "pod", "-A", "--limit", "3", "--sum")[2]
    assert err.endswith("1 more pod not shown (--limit 3); the sum counts only the rows shown\n")
    # -n is the namespace, as in kubectl, no longer a row limit.
    code, out, err = top(capsys, url, "pod", "-n", "10")
    assert (code, out) == (0, "")
    assert err.startswith("No pods in namespace 10 recorded between 2024-05-01T00:00:00Z and ")


def test_json_and_csv(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = top(capsys, url, "pod", "-n", "shop", "-o", "json", "--agg", "max")
    assert (code, err) == (0, "")
    window = {"agg": "max", "start": "2024-05-01T00:00:00Z", "end": "2024-05-01T01:00:00Z"}
    shop = {"cluster": DEFAULT_CLUSTER, "namespace": "shop"}
    assert json.loads(out) == [
        {**shop, "pod": "cart", **window, "cpu_cores": 0.4, "memory_bytes": 10 * MI},
        {**shop, "pod": "web", **window, "cpu_cores": 0.25, "memory_bytes": 220 * MI},
    ]
    containers = json.loads(
        top(capsys, url, "pod", "web", "-n", "shop", "--containers", "--output", "json")[1]
    )
    assert [(c["container"], c["cpu_cores"], c["agg"]) for c in containers] == [
        ("app", 0.2, "avg"),
        ("sidecar", 0.05, "avg"),
    ]
    out = top(capsys, url, "node", "-o", "csv", "--time-format", "unix")[1]
    assert list(csv.reader(io.StringIO(out))) == [
        ["cluster", "node", "agg", "start", "end", "cpu_cores", "memory_bytes"],
        [DEFAULT_CLUSTER, "n1", "avg", str(T0 / 1000), str(END / 1000), "1.0", str(1024 * MI)],
        [DEFAULT_CLUSTER, "n2", "avg", str(T0 / 1000), str(END / 1000), "2.0", str(512 * MI)],
    ]
    out = top(capsys, url, "pod", "-n", "nowhere", "-o", "csv", "--no-headers")[1]
    assert out == ""
    out = top(capsys, url, "pod", "-n", "nowhere", "-o", "json")[1]
    assert out == "[]\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["node", "-n", "shop"], "-n/--namespace goes with top pod, not top node"),
        (["node", "-A"], "-A/--all-namespaces goes with top pod, not top node"),
        (["node", "-l", "app=web"], "-l/--selector (it matches pod labels) goes with top pod"),
        (["node", "--containers"], "--containers goes with top pod, not top node"),
        (["pod", "web", "-A"], "a pod is named in one namespace: give NAME with -n, not -A"),
        (["pod", "web", "-l", "app=web"], "give NAME or -l/--selector, not both"),
        (["pod", "--sum", "-o", "json"], "--sum goes with the table output, not -o json"),
        (["pod", "--no-headers", "-o", "json"], "--no-headers goes with the table or -o csv"),
        (["pod", "--since", "soon"], "--since='soon': "),
        (["pod", "--since", "0.1s"], "--since='0.1s' is shorter than 1s"),
        (["pod", "--since", "401d"], "--since='401d' is longer than the longest range"),
        (["pod", "-l", "app in"], "-l/--selector: unable to parse requirement"),
    ],
)
def test_flags_that_do_not_fit_are_one_line_errors(
    url: str, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, out, err = top(capsys, url, *args)
    assert (code, out) == (2, "")
    assert err.startswith("recorder top: error: ") and message in err, err
    assert err.count("\n") == 1 and "step" not in err


def test_help_states_the_default_aggregation_and_order(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["top", "--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "The value is the average (--agg avg, the default) of the samples in the window" in text
    assert "--since SINCE window length" in text and "default 1h" in text
    assert "Rows are in name order" in text
    with pytest.raises(SystemExit):
        main(["top", "pod", "--limit", "0"])
    assert "--limit: '0' must be at least 1" in capsys.readouterr().err


# --- a pod's value over a window is the history API's value for kind=pod over it ------------

APP = SeriesKey.for_container("shop", "web", "app")
SIDE = SeriesKey.for_container("shop", "web", "sidecar")
HOURS = 3


def out_of_phase() -> list[Sample]:
    """Two containers out of phase, a minute apart for three hours from ``T0``: the pod's peak
    (12 ms.. of CPU) is far below the sum of its containers' peaks, and so is its p95."""
    samples = []
    for i in range(HOURS * 60):
        ts = T0 + i * MINUTE_MS
        app = 1_000_000 * (1 + i % 10)
        side = 1_000_000 * (11 - i % 10) + 1_000 * (i % 7)
        samples += [
            Sample(APP, ts, 60_000, app, (100 + i % 13) * MI),
            Sample(SIDE, ts, 60_000, side, (200 - i % 11) * MI),
        ]
    return samples


@pytest.fixture
def api(store: Store) -> Iterator[httpx.Client]:
    """The HTTP API over ``store``."""
    registry, _ = build_registry(SnapshotHolder())
    deps = AppDeps(store, registry, clock=lambda: (T0 + 10 * DAY_MS) / 1000)
    with serving(create_app(deps)) as base, httpx.Client(base_url=base) as client:
        yield client


def history_value(api: httpx.Client, resource: str, kind: str, agg: str, **filters: str) -> float:
    """The one value of ``kind``'s series over the window ``[T0, T0 + 3 h)`` (a step as long
    as the window, aligned on it: one bucket)."""
    response = api.get(
        "/api/v1/history",
        params={
            "resource": resource,
            "kind": kind,
            "namespace": "shop",
            "start": str(T0 / 1000),
            "end": str((T0 + HOURS * HOUR_MS - 1) / 1000),
            "step": f"{HOURS}h",
            "agg": agg,
            **filters,
        },
    )
    assert response.status_code == 200, response.text
    (series,) = response.json()["data"]["series"]
    ((bucket, value),) = series["points"]
    assert bucket == T0 / 1000
    return float(value)


def top_json(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> list[dict[str, object]]:
    end = (T0 + HOURS * HOUR_MS - 1) / 1000
    window = ["--since", f"{HOURS}h", "--end", str(end)]
    code = main(["top", "pod", "-n", "shop", *window, "-o", "json", *args, "--database-url", url])
    assert code == 0
    rows: list[dict[str, object]] = json.loads(capsys.readouterr().out)
    return rows


def test_a_pods_max_and_p95_are_the_history_of_its_summed_series(
    database_url: str, store: Store, api: httpx.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    samples = out_of_phase()
    store.write(Batch(Kind.CONTAINER, tuple(samples)), now_ms=samples[-1].timestamp_ms)
    url = store.engine.url.render_as_string(hide_password=False)
    sums: dict[int, list[int]] = {}
    for s in samples:
        sums.setdefault(s.timestamp_ms, [0, 0])
        sums[s.timestamp_ms][0] += s.cpu_nanocores
        sums[s.timestamp_ms][1] += s.memory_bytes
    pod_cpu = [cpu for cpu, _ in sums.values()]
    container_peaks = sum(max(s.cpu_nanocores for s in samples if s.key == k) for k in (APP, SIDE))
    assert max(pod_cpu) == 12_006_000 and container_peaks == 21_006_000  # they differ

    def check(stage: str) -> None:
        for agg in ("max", "p95"):
            (row,) = top_json(capsys, url, "--agg", agg)
            assert row["pod"] == "web"
            for resource, key in (("cpu", "cpu_cores"), ("memory", "memory_bytes")):
                expected = history_value(api, resource, "pod", agg)
                assert row[key] == expected, (stage, agg, resource)
            if agg == "max":
                assert row["cpu_cores"] == max(pod_cpu) / 1e9, stage  # not container_peaks
            else:
                exact = exact_quantile(pod_cpu, 0.95) / 1e9
                assert row["cpu_cores"] == pytest.approx(exact, rel=0.01), stage
        # --containers: each container on its own series, as kind=container.
        for row in top_json(capsys, url, "--agg", "max", "--containers"):
            container = str(row["container"])
            expected = history_value(api, "cpu", "container", "max", container=container)
            assert row["cpu_cores"] == expected, (stage, container)

    check("head only")
    store.maintain(now_ms=T0 + 4 * HOUR_MS, grace_ms=0)
    check("compacted")
    expire_full_resolution(database_url, now_ms=T0 + 8 * HOUR_MS)
    with store.engine.connect() as conn:
        chunks = conn.execute(schema.chunks.select()).all()
    assert chunks and all(chunk.payload is None for chunk in chunks)  # statistics only
    check("beyond full-resolution retention")


def test_a_window_of_days_is_snapped_to_whole_days_and_says_so(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    asked_end = T0 + 2 * DAY_MS + 5 * HOUR_MS  # 2024-05-03T05:00:00Z
    code, out, err = top(capsys, url, "pods", "-A", "--since", "2d", end=asked_end)
    assert code == 0
    assert err.splitlines() == [
        "# the window was snapped to whole UTC days: 2024-05-01T00:00:00Z .. "
        "2024-05-02T23:59:59.999Z (asked: 2024-05-01T05:00:00Z .. 2024-05-03T05:00:00Z), so "
        "day rollups answer it",
        "# avg over 2024-05-01T00:00:00Z .. 2024-05-02T23:59:59.999Z",
    ]
    # The values are those of the same two whole days asked for another way.
    code, exact, err = top(capsys, url, "pods", "-A", "--since", "48h", end=T0 + 2 * DAY_MS - 1)
    assert out == exact and "2024-05-01T00:00:00Z .. 2024-05-02T23:59:59.999Z" in err
    # The hour of samples lies before the asked window's start: snapping brought it in.
    assert "shop        web    250m         220Mi" in out
    _code, _short, err = top(capsys, url, "pods", "-A", "--since", "47h", end=asked_end - DAY_MS)
    assert "snapped" not in err
