"""``recorder query``: the history API from the command line, printed as a table, JSON or CSV."""

from __future__ import annotations

import argparse
from typing import Any

from recorder import commands, timeutil
from recorder.cli import options
from recorder.domain import Agg, HistoryQuery, HistoryResult, QueryKind, Resource, SeriesFilter
from recorder.query import engine, formats, params
from recorder.settings import Settings
from recorder.timeutil import HOUR_MS


def add_history(subcommands: Any) -> None:
    query = subcommands.add_parser("query", help="the history API from the command line")
    options.database_url(query)
    query.add_argument("--resource", required=True, choices=["cpu", "memory"])
    query.add_argument("--kind", default="container", choices=[k.value for k in QueryKind])
    for name in ("node", "namespace", "pod", "container", "selector", "start", "end", "step"):
        query.add_argument(f"--{name}")
    query.add_argument("--workload-kind", help="pods whose top-level owner is of this kind")
    query.add_argument("--workload", help="pods whose top-level owner has this name")
    query.add_argument(
        "--with-requests",
        action="store_true",
        help="also the request and limit in effect at each point (kind container, pod or "
        "workload; from the recorded cluster objects)",
    )
    query.add_argument(
        "--with-allocatable",
        action="store_true",
        help="kind node: also the node's allocatable in effect at each point, and the usage as "
        "its percentage as kubectl top node shows it (from the recorded cluster objects)",
    )
    query.add_argument(
        "--interval",
        type=options.positive_seconds,
        help="the poll interval the history was recorded at: kind=workload takes each pod's "
        "newest sample within two of it (default RECORDER_INTERVAL or 30s)",
    )
    options.cluster_filter(query)
    query.add_argument("--agg", default="avg", choices=[a.value for a in Agg])
    query.add_argument("--format", default="table", choices=["table", "json", "csv"])
    options.time_format(query, "times in csv")
    options.log_level(query)
    query.set_defaults(handler=cmd_query)


def _history(
    settings: Settings,
    query: HistoryQuery,
    *,
    with_requests: bool = False,
    with_allocatable: bool = False,
) -> HistoryResult:
    """The one call site of ``recorder query`` into the history."""
    store = commands.open_query_store(settings)
    try:
        return engine.history(
            store,
            query,
            max_points=10**7,
            interval_ms=max(timeutil.seconds_to_ms(settings.interval_seconds), 1),
            with_requests=with_requests,
            with_allocatable=with_allocatable,
        )
    finally:
        store.close()


def cmd_query(args: argparse.Namespace) -> int:
    settings = commands.settings_from_args(args)
    start_ms, end_ms = params.parse_range(
        args.start,
        args.end,
        now_ms=timeutil.now_ms(),
        default_ms=HOUR_MS,
        max_range_ms=2**62,
        names=("--start", "--end"),
    )
    step_ms = params.parse_step_ms(args.step, name="--step")
    resource, kind, agg = Resource(args.resource), QueryKind(args.kind), Agg(args.agg)
    where = SeriesFilter(
        kind,
        args.node,
        args.namespace,
        args.pod,
        args.container,
        params.parse_selector(args.selector),
        args.only_cluster,
        args.workload_kind,
        args.workload,
    )
    result = _history(
        settings,
        HistoryQuery(resource, where, start_ms, end_ms, step_ms, agg),
        with_requests=args.with_requests,
        with_allocatable=args.with_allocatable,
    )
    shown = agg if step_ms is not None else None
    text = formats.history_text(
        args.format, result, resource, kind, step_ms, shown, args.time_format
    )
    print(text, end="")
    return 0
