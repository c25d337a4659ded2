"""Namespace rollups answer a whole-day summary by namespace or cluster exactly as every
series' own rollups do (``use_namespace_rollups=False``), and only where they can: other
groupings and filters, partial days, late samples and counts that disagree with the rollups
read every series."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import delete, insert, select

from recorder.domain import (
    Batch,
    GroupSummary,
    Kind,
    QueryKind,
    Sample,
    SeriesFilter,
    SeriesKey,
)
from recorder.errors import QueryError
from recorder.query import engine, groups
from recorder.selectors import parse_label_selector
from recorder.store import Store, open_store, rollups, schema

DAY = 86_400_000
D0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z
STEP = 1_200_000
WINDOW = (D0, D0 + 3 * DAY - 1)

# (cluster, namespace, pod, container): which days it has samples, every how many steps
SERIES = [
    ("default", "shop", "web-1", "app", (0, 1, 2), 1),
    ("default", "shop", "web-1", "proxy", (0, 1, 2), 1),
    ("default", "shop", "web-2", "app", (1, 2), 1),  # starts on the second day
    ("default", "db", "pg-0", "postgres", (0, 1, 2), 2),  # every other step
    ("default", "db", "pg-1", "postgres", (0, 2), 1),  # missing the middle day
    ("east", "shop", "web-1", "app", (0, 1, 2), 1),  # the same names in another cluster
    ("east", "batch", "job-7", "worker", (1,), 1),
]


def samples() -> dict[tuple[str, int], list[Sample]]:
    """By cluster and timestamp: what each poll of that cluster lists."""
    rng = random.Random(11)
    out: dict[tuple[str, int], list[Sample]] = {}
    for cluster, namespace, pod, container, days, every in SERIES:
        key = SeriesKey.for_container(namespace, pod, container, cluster)
        level = rng.randrange(10**6, 10**9)
        for day in days:
            for i, ts in enumerate(range(D0 + day * DAY, D0 + (day + 1) * DAY, STEP)):
                if i % every or rng.random() < 0.03:
                    continue
                cpu = 0 if rng.random() < 0.05 else max(0, int(rng.gauss(level, level / 5)))
                memory = rng.randrange(10**4, 10**6) * 4096
                out.setdefault((cluster, ts), []).append(Sample(key, ts, 30_000, cpu, memory))
    return out


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = open_store(database_url)
    store.migrate()
    labels = {
        cluster: {
            (ns, pod): {"app": pod.split("-")[0]} for c, ns, pod, *_ in SERIES if c == cluster
        }
        for cluster in ("default", "east")
    }
    for (cluster, ts), found in sorted(samples().items(), key=lambda item: item[0][1]):
        batch = Batch(Kind.CONTAINER, tuple(found), pod_labels=labels[cluster], cluster=cluster)
        store.write(batch, now_ms=ts)
    report = store.maintain(now_ms=D0 + 3 * DAY + 3_600_000, grace_ms=600_000)
    assert report.compaction.rollup_days == 3
    yield store
    store.close()


@pytest.fixture
def used(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """One entry per summary that tried namespace rollups: whether they answered it."""
    calls: list[bool] = []
    real = groups.from_namespace_rollups

    def spy(*args: Any, **kwargs: Any) -> groups.Rolled | None:
        found = real(*args, **kwargs)
        calls.append(found is not None)
        return found

    monkeypatch.setattr(groups, "from_namespace_rollups", spy)
    return calls


def both(
    store: Store, where: SeriesFilter, group_by: str, window: tuple[int, int] = WINDOW
) -> tuple[list[GroupSummary], list[GroupSummary]]:
    """The summary as answered, and as every series' statistics answer it."""
    fast = engine.summarize(store, where, group_by, *window, max_groups=100)
    slow = engine.summarize(
        store, where, group_by, *window, max_groups=100, use_namespace_rollups=False
    )
    return fast, slow


CASES = [
    SeriesFilter(QueryKind.CONTAINER),
    SeriesFilter(QueryKind.POD),
    SeriesFilter(QueryKind.CONTAINER, cluster="east"),
    SeriesFilter(QueryKind.CONTAINER, namespace="shop"),
    SeriesFilter(QueryKind.POD, cluster="default", namespace="db"),
]


@pytest.mark.parametrize("group_by", ["namespace", "cluster"])
def test_namespace_rollups_answer_as_the_series_rollups(
    store: Store, used: list[bool], group_by: str
) -> None:
    for where in CASES:
        used.clear()
        fast, slow = both(store, where, group_by)
        assert used == [True], where
        assert fast == slow, where
        assert all(g.cpu is not None and g.memory is not None for g in fast)
    everything, _ = both(store, SeriesFilter(QueryKind.CONTAINER), group_by)
    if group_by == "namespace":  # "shop" of both clusters is one group
        assert [(g.group, g.series) for g in everything] == [("batch", 1), ("db", 2), ("shop", 4)]
    else:
        assert [(g.group, g.series) for g in everything] == [("default", 5), ("east", 2)]


@pytest.mark.parametrize(
    ("where", "group_by"),
    [
        (SeriesFilter(QueryKind.CONTAINER), "pod"),
        (SeriesFilter(QueryKind.CONTAINER), "container"),
        (SeriesFilter(QueryKind.POD), "label:app"),
        (SeriesFilter(QueryKind.CONTAINER, selector=parse_label_selector("app=web")), "namespace"),
        (SeriesFilter(QueryKind.CONTAINER, pod="web-1"), "namespace"),
        (SeriesFilter(QueryKind.CONTAINER, container="app"), "cluster"),
    ],
)
def test_other_groupings_and_filters_read_every_series(
    store: Store, used: list[bool], where: SeriesFilter, group_by: str
) -> None:
    fast, slow = both(store, where, group_by)
    assert used == []
    assert fast == slow and fast


def test_partial_days_and_late_samples_read_every_series(store: Store, used: list[bool]) -> None:
    where = SeriesFilter(QueryKind.CONTAINER)
    fast, slow = both(store, where, "namespace", (D0 + 3_600_000, WINDOW[1]))
    assert used == [False] and fast == slow
    used.clear()
    assert both(store, where, "namespace", (D0, D0 + DAY))[0]  # one minute past a day
    assert used == [False]
    # A late sample waits in the head: the day's chunks and the head answer it.
    with store.engine.begin() as conn:
        sid = _container(conn, "pg-0")
        store.head.append(conn, [(D0 + DAY + 7, sid, 30_000, 9 * 10**9, 4096)])
    used.clear()
    fast, slow = both(store, where, "namespace")
    assert used == [False] and fast == slow
    db = next(g for g in fast if g.group == "db")
    assert db.cpu is not None and db.cpu.max == 9 * 10**9
    # Looking at the head first counts nothing against max_samples: the samples the answer
    # decodes (the late block's and the head's) are counted once.
    low, high = 1, 100_000
    while low < high:
        middle = (low + high) // 2
        try:
            engine.summarize(
                store,
                where,
                "namespace",
                *WINDOW,
                max_groups=100,
                max_samples=middle,
                use_namespace_rollups=False,
            )
            high = middle
        except QueryError:
            low = middle + 1
    assert low > 1
    found = engine.summarize(store, where, "namespace", *WINDOW, max_groups=100, max_samples=low)
    assert found == fast


def _container(conn: Any, pod: str) -> int:
    s = schema.series.c
    return int(conn.execute(select(s.id).where(s.pod == pod, s.kind == "container")).scalar_one())


def _rollup(conn: Any, series_id: int, day: int) -> None:
    row = conn.execute(
        select(schema.rollups).where(schema.rollups.c.day_start_ms == day).limit(1)
    ).one()
    conn.execute(insert(schema.rollups), [{**row._mapping, "series_id": series_id}])


def test_counts_that_disagree_read_every_series(store: Store, used: list[bool]) -> None:
    where = SeriesFilter(QueryKind.CONTAINER)
    n = schema.namespace_rollups
    # A day's namespace rollups missing (rolled up before they existed): read every series,
    # until maintenance gives the day its rows.
    with store.engine.begin() as conn:
        conn.execute(delete(n).where(n.c.day_start_ms == D0 + DAY))
    fast, slow = both(store, where, "namespace")
    assert used == [False] and fast == slow
    rollups.build(store.engine, D0 + 3 * DAY, [])
    used.clear()
    assert both(store, where, "namespace")[0] == slow
    assert used == [True]
    # Rollups written without theirs (``recorder copy`` copies rollups as they are).
    with store.engine.begin() as conn:
        _rollup(conn, _container(conn, "pg-1"), D0 + DAY)  # the day pg-1 has none
    used.clear()
    fast, slow = both(store, where, "namespace")
    assert used == [False] and fast == slow
    # Rebuilding the day makes them agree again.
    with store.engine.begin() as conn:
        rollups.build_namespaces(conn, D0 + DAY)
    used.clear()
    assert both(store, where, "namespace")[0] == slow
    assert used == [True]
    # A day's rollups dropped (retention) while its namespace rollups are still there.
    with store.engine.begin() as conn:
        conn.execute(delete(schema.rollups).where(schema.rollups.c.day_start_ms == D0))
    used.clear()
    fast, slow = both(store, where, "namespace", (D0, WINDOW[1]))
    assert used == [False] and fast == slow
