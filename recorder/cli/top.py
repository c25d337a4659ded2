"""``recorder top pods|nodes``: like ``kubectl top``, over a past window."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from recorder import commands, timeutil
from recorder.cli import options
from recorder.domain import Agg, QueryKind, Resource, SeriesFilter
from recorder.query import engine, formats, params
from recorder.settings import Settings
from recorder.timeutil import HOUR_MS


def add_top(subcommands: Any) -> None:
    top = subcommands.add_parser("top", help="like kubectl top, over a past window")
    top.add_argument("what", choices=["pods", "nodes"])
    options.database_url(top)
    scope = top.add_mutually_exclusive_group()
    scope.add_argument("-A", "--all-namespaces", action="store_true")
    scope.add_argument("--namespace", help="pods of this namespace (default: default)")
    top.add_argument("--selector", "-l", help="label selector on pod labels")
    options.cluster_filter(top)
    top.add_argument(
        "--since", default="1h", help="window length: a duration (1h, 90m, 1.5d, 2w; default 1h)"
    )
    top.add_argument("--end", help="end of the window (default now): RFC 3339, unix seconds")
    top.add_argument("--agg", default="avg", choices=[a.value for a in Agg if a is not Agg.COUNT])
    top.add_argument("--sort-by", default="cpu", choices=["cpu", "memory"])
    top.add_argument("-n", "--limit", type=int, default=20, help="rows to show (default 20)")
    options.log_level(top)
    top.set_defaults(handler=cmd_top)


def _top(
    settings: Settings, where: SeriesFilter, start_ms: int, end_ms: int, agg: Agg
) -> list[formats.TopRow]:
    """The one call site of ``recorder top`` into the history."""
    store = commands.open_query_store(settings)
    try:
        return list(engine.top(store, where, start_ms, end_ms, agg))
    finally:
        store.close()


def cmd_top(args: argparse.Namespace) -> int:
    settings = commands.settings_from_args(args)
    now_ms = timeutil.now_ms()
    end_ms = params.parse_time_ms(args.end, "--end", now_ms) if args.end else now_ms
    since_ms = params.parse_step_ms(args.since, name="--since") or HOUR_MS
    nodes = args.what == "nodes"
    namespace = None if args.all_namespaces or nodes else (args.namespace or "default")
    where = SeriesFilter(
        QueryKind.NODE if nodes else QueryKind.CONTAINER,
        namespace=namespace,
        selector=params.parse_selector(args.selector),
        cluster=args.only_cluster,
    )
    rows = _top(settings, where, end_ms - since_ms, end_ms, Agg(args.agg))
    sort_by = Resource.CPU if args.sort_by == "cpu" else Resource.MEMORY
    shown = formats.rank_top(rows, sort_by, args.limit)
    if not shown:
        where_text = "in any namespace" if namespace is None else f"in namespace {namespace}"
        if args.only_cluster is not None:
            where_text += f" of cluster {args.only_cluster}"
        print(f"No {args.what} recorded {where_text} in the last {args.since}.", file=sys.stderr)
        return 0
    print(formats.top_table(shown, nodes=nodes, all_namespaces=namespace is None), end="")
    return 0
