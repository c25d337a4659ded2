"""``recorder top pod|node|workload [NAME]``: like ``kubectl top``, over a past window."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from recorder import commands, timeutil
from recorder.cli import options
from recorder.domain import Agg, QueryKind, Resource, SeriesFilter
from recorder.errors import QueryError
from recorder.query import engine, formats, params
from recorder.settings import Settings
from recorder.timeutil import HOUR_MS

_WHAT = {
    "pod": "pod",
    "pods": "pod",
    "po": "pod",
    "node": "node",
    "nodes": "node",
    "no": "node",
    "workload": "workload",
    "workloads": "workload",
}

_DESCRIPTION = """\
Like kubectl top, over a past window: each pod's (or node's, or with --containers each
container's) CPU and memory, aggregated over the window --since long that ends at --end.

The value is the average (--agg avg, the default) of the samples in the window; --agg max,
p95... choose another aggregation. A pod's value is computed on the pod's summed series (its
containers added at each instant), as /api/v1/history?kind=pod computes it: with --agg max
that is the pod's own peak, not the sum of its containers' peaks. Rows are in name order
(namespace, then name) unless --sort-by says otherwise. Above the table, a line on stderr
says what the values are (# avg over <start> .. <end>).

recorder top workloads: each workload's (Deployment, StatefulSet, DaemonSet, CronJob, Job;
a pod without a recorded owner is its own, kind Pod) value is computed on its summed series,
as /api/v1/history?kind=workload computes it: at each multiple of the poll interval
(--interval), each pod's newest sample within two intervals, summed; so it spans rollouts.
NAME is the workload's name, --workload-kind its kind; --containers gives a row per container
name.

recorder top nodes adds kubectl's CPU(%) and MEMORY(%) once nodes' allocatable is recorded
(the cluster-objects reader): the value over allocatable as kubectl computes it, allocatable
as it was at the window's end (with --agg last, what kubectl top nodes shows at that instant).

A window of 2 days or more is snapped to whole UTC days (--since 7d: the 7 days before
today), so day rollups answer it at any scale; a line on stderr says so."""


def add_top(subcommands: Any) -> None:
    top = subcommands.add_parser(
        "top",
        help="like kubectl top pod/node, over a past window",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument(
        "what",
        choices=list(_WHAT),
        metavar="pod|node|workload",
        help="pod (po, pods), node (no, nodes) or workload (workloads)",
    )
    top.add_argument("name", nargs="?", metavar="NAME", help="only this pod, node or workload")
    options.database_url(top)
    scope = top.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", help="pods of this namespace (default: default)")
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="pods of every namespace"
    )
    top.add_argument("-l", "--selector", help="label selector on pod labels (app=web,tier!=db)")
    top.add_argument(
        "--containers",
        action="store_true",
        help="one row per container (columns POD, NAME; of workloads: CONTAINER)",
    )
    top.add_argument(
        "--workload-kind",
        metavar="KIND",
        help="top workload: only workloads of this kind (Deployment, StatefulSet, ..., Pod)",
    )
    top.add_argument(
        "--interval",
        type=options.positive_seconds,
        help="top workload: the poll interval the history was recorded at (default "
        "RECORDER_INTERVAL or 30s)",
    )
    options.cluster_filter(top)
    top.add_argument(
        "--since", default="1h", help="window length: a duration (1h, 90m, 1.5d, 2w; default 1h)"
    )
    top.add_argument("--end", help="end of the window (default now): RFC 3339, unix seconds")
    top.add_argument(
        "--agg",
        default="avg",
        choices=[a.value for a in Agg if a is not Agg.COUNT],
        help="aggregation of each row's samples over the window (default avg: their mean)",
    )
    top.add_argument(
        "--sort-by",
        choices=["cpu", "memory"],
        help="the rows using the most first (default: in name order, as kubectl)",
    )
    top.add_argument("--no-headers", action="store_true", help="no header line (table, CSV)")
    top.add_argument(
        "--sum", action="store_true", help="a sum row under the table, as kubectl top pod --sum"
    )
    top.add_argument(
        "--limit",
        type=options.positive_int,
        metavar="N",
        help="show the first N rows only (stderr says how many are hidden; default all)",
    )
    top.add_argument(
        "-o",
        "--output",
        default="table",
        choices=["table", "json", "csv"],
        help="table (default, as kubectl), json (a list of objects: CPU in cores, memory in "
        "bytes) or csv (the same fields)",
    )
    options.time_format(top, "the window's times in json and csv")
    options.log_level(top)
    top.set_defaults(handler=cmd_top)


def _top(
    settings: Settings,
    where: SeriesFilter,
    start_ms: int,
    end_ms: int,
    agg: Agg,
    containers: bool,
) -> tuple[list[engine.TopRow], engine.Allocatable]:
    """The one call site of ``recorder top`` into the history: the rows, and for nodes their
    allocatable at the window's end."""
    store = commands.open_query_store(settings)
    try:
        rows = engine.top(
            store,
            where,
            start_ms,
            end_ms,
            agg,
            containers=containers,
            interval_ms=max(timeutil.seconds_to_ms(settings.interval_seconds), 1),
        )
        allocatable: engine.Allocatable = {}
        if where.kind is QueryKind.NODE and rows:
            allocatable = engine.allocatable_at(store, where, end_ms)
        return rows, allocatable
    finally:
        store.close()


def _check_flags(args: argparse.Namespace, nodes: bool, workloads: bool) -> None:
    """Flags that do not go together, as kubectl refuses them."""
    if args.workload_kind is not None and not workloads:
        raise QueryError("--workload-kind goes with top workload")
    if nodes:
        for given, flag in (
            (args.namespace is not None, "-n/--namespace"),
            (args.all_namespaces, "-A/--all-namespaces"),
            (args.selector is not None, "-l/--selector (it matches pod labels)"),
            (args.containers, "--containers"),
        ):
            if given:
                raise QueryError(f"{flag} goes with top pod, not top node")
    if args.name is not None and args.all_namespaces:
        what = "workload" if workloads else "pod"
        raise QueryError(f"a {what} is named in one namespace: give NAME with -n, not -A")
    if args.name is not None and args.selector is not None:
        raise QueryError("give NAME or -l/--selector, not both")
    if args.output != "table" and args.sum:
        raise QueryError("--sum goes with the table output, not -o " + args.output)
    if args.output == "json" and args.no_headers:
        raise QueryError("--no-headers goes with the table or -o csv, not -o json")


def cmd_top(args: argparse.Namespace) -> int:
    what = _WHAT[args.what]
    nodes, workloads = what == "node", what == "workload"
    _check_flags(args, nodes, workloads)
    settings = commands.settings_from_args(args)
    since_ms = params.parse_step_ms(args.since, name="--since") or HOUR_MS
    asked_start_ms, asked_end_ms = params.parse_range(
        None,
        args.end,
        now_ms=timeutil.now_ms(),
        default_ms=since_ms,
        max_range_ms=2**62,
        names=("--since", "--end"),
    )
    window = params.day_window(asked_start_ms, asked_end_ms)
    start_ms, end_ms = window.start_ms, window.end_ms
    namespace = None if args.all_namespaces or nodes else (args.namespace or "default")
    where = SeriesFilter(
        QueryKind.NODE if nodes else QueryKind.WORKLOAD if workloads else QueryKind.POD,
        node=args.name if nodes else None,
        namespace=namespace,
        pod=args.name if what == "pod" else None,
        selector=options.selector(args.selector),
        cluster=args.only_cluster,
        workload_kind=args.workload_kind,
        workload=args.name if workloads else None,
    )
    agg = Agg(args.agg)
    containers = args.containers
    rows, allocatable = _top(settings, where, start_ms, end_ms, agg, containers)
    subject = f" of cluster {args.only_cluster}" if args.only_cluster is not None else ""
    if not nodes:
        subject += " in any namespace" if namespace is None else f" in namespace {namespace}"
    window_text = f"between {formats.rfc3339(start_ms)} and {formats.rfc3339(end_ms)} (--since "
    window_text += f"{args.since})"
    if not rows and args.name is not None:
        raise QueryError(
            f"no metrics recorded for {what} {args.name!r}{subject} {window_text}: check the name"
            + ("" if nodes else " and the namespace (-n)")
            + ", or widen --since"
        )
    if not rows:
        print(f"No {what}s{subject} recorded {window_text}.", file=sys.stderr)
    if window.snapped:
        sys.stdout.flush()
        print(formats.top_snapped(window), end="", file=sys.stderr)
    sort_by = None if args.sort_by is None else Resource(args.sort_by)
    ranked = formats.rank_top(rows, sort_by)
    shown = ranked if args.limit is None else ranked[: args.limit]
    kind = QueryKind.NODE if nodes else QueryKind.CONTAINER if containers else QueryKind.POD
    if args.output == "json":
        text = formats.top_json(shown, agg, start_ms, end_ms, args.time_format, allocatable)
        print(text, end="")
    elif args.output == "csv":
        names = engine.LABELS[QueryKind.WORKLOAD if workloads else kind]
        if workloads and containers:
            names = (*names, "container")
        text = formats.top_csv(
            shown,
            agg,
            start_ms,
            end_ms,
            args.time_format,
            names=names,
            headers=not args.no_headers,
            allocatable=allocatable,
        )
        print(text, end="")
    elif shown:
        if not args.no_headers:
            sys.stdout.flush()
            print(formats.top_window(agg, start_ms, end_ms), end="", file=sys.stderr)
        table = formats.top_table(
            shown,
            nodes=nodes,
            all_namespaces=namespace is None,
            containers=containers,
            workloads=workloads,
            allocatable=allocatable,
            headers=not args.no_headers,
            total=args.sum,
        )
        print(table, end="")
    if len(shown) < len(ranked):
        hidden = len(ranked) - len(shown)
        unit = "container" if containers and not workloads else what
        note = f"{hidden} more {unit}{'s' if hidden > 1 else ''} not shown (--limit {args.limit})"
        sys.stdout.flush()
        print(note + ("; the sum counts only the rows shown" if args.sum else ""), file=sys.stderr)
    return 0
