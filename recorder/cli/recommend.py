"""``recorder recommend``: right-sizing per workload and container name (the strategy is
``recorder.query.recommend``'s), as a table like krr's, JSON, CSV or ``kubectl patch`` patches."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from recorder import commands, timeutil
from recorder.cli import options
from recorder.errors import QueryError
from recorder.query import params, recommend_output
from recorder.query.formats import rfc3339
from recorder.query.recommend import Report, Strategy, recommend
from recorder.query.workloads import WorkloadFilter
from recorder.settings import Settings
from recorder.timeutil import DAY_MS

_DESCRIPTION = """\
Right-sizing per workload and container name, from the usage of every pod the workload had
in the window (pods replaced by rollouts included), beside the current requests and limits.

Default strategy: CPU request = the 95th percentile of CPU usage over the last 14 days pooled
across the workload's pods (within 1 %: block statistics' sketches), no CPU limit; memory
request = limit = the peak (exact) plus 15 %. No proposal below 100 data points per container
name, nor for a resource an HPA scales the workload on: the reason is shown. Saving per month
= (current - proposed request) x the average running replicas x 730 h. Throttled (CPU at its
limit) and OOM-killed containers are flagged: their usage under-states the need.

-o yaml-patch prints a strategic-merge patch per workload (kubectl patch KIND NAME -n NS
--type strategic --patch-file FILE); -o json-patch prints one kubectl patch command per
workload with the patch as JSON."""

OUTPUTS = ("table", "json", "csv", "yaml-patch", "json-patch")


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def add_recommend(subcommands: Any) -> None:
    parser = subcommands.add_parser(
        "recommend",
        help="right-sizing per workload and container: current, proposal, saving, patches",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    options.database_url(parser)
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", help="workloads of this namespace (default: default)")
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="workloads of every namespace"
    )
    parser.add_argument(
        "--kind",
        help="only workloads of this kind (Deployment, StatefulSet, DaemonSet, CronJob, Job, "
        "Pod: a pod of no recorded workload; any case)",
    )
    parser.add_argument("--name", help="only the workload of this name")
    parser.add_argument("--container", help="only containers of this name")
    parser.add_argument("-l", "--selector", help="only pods whose labels match (app=web,tier!=db)")
    options.cluster_filter(parser)
    parser.add_argument(
        "--window", default="14d", help="history to use, ending at --end (default 14d)"
    )
    parser.add_argument("--end", help="end of the window (default now): RFC 3339, unix seconds")
    strategy = parser.add_argument_group("strategy")
    strategy.add_argument(
        "--cpu-percentile",
        type=_number,
        default=95.0,
        help="CPU request = this percentile of CPU usage (default 95)",
    )
    strategy.add_argument(
        "--memory-buffer",
        type=_number,
        default=15.0,
        metavar="PERCENT",
        help="memory request = limit = peak plus this percentage (default 15)",
    )
    strategy.add_argument(
        "--min-points",
        type=options.positive_int,
        default=100,
        help="no proposal below this many samples per container name (default 100)",
    )
    strategy.add_argument(
        "--throttle-ratio",
        type=_number,
        default=0.9,
        help="flag as throttled when CPU usage reached this share of the limit (default 0.9)",
    )
    strategy.add_argument(
        "--allow-hpa",
        action="store_true",
        help="propose even for a resource an HPA scales the workload on",
    )
    parser.add_argument(
        "-o",
        "--output",
        default="table",
        choices=OUTPUTS,
        help="table (default), " + ", ".join(OUTPUTS[1:]),
    )
    parser.add_argument("--no-headers", action="store_true", help="no header line (table, CSV)")
    options.log_level(parser)
    parser.set_defaults(handler=cmd_recommend)


def strategy_of(args: argparse.Namespace) -> Strategy:
    window_ms = params.parse_step_ms(args.window, name="--window", max_ms=400 * DAY_MS)
    return Strategy(
        window_ms=window_ms or 14 * DAY_MS,
        cpu_percentile=args.cpu_percentile,
        memory_buffer_percent=args.memory_buffer,
        min_points=args.min_points,
        throttle_ratio=args.throttle_ratio,
        allow_hpa=args.allow_hpa,
    )


def _recommend(
    settings: Settings, where: WorkloadFilter, strategy: Strategy, end_ms: int
) -> Report:
    """The one call site of ``recorder recommend`` into the history."""
    store = commands.open_query_store(settings)
    try:
        return recommend(store, where, strategy, end_ms)
    finally:
        store.close()


def cmd_recommend(args: argparse.Namespace) -> int:
    if args.output in ("json", "yaml-patch", "json-patch") and args.no_headers:
        raise QueryError(f"--no-headers goes with the table or -o csv, not -o {args.output}")
    settings = commands.settings_from_args(args)
    strategy = strategy_of(args)
    now = timeutil.now_ms()
    end_ms = now if args.end is None else params.parse_time_ms(args.end, "--end", now)
    namespace = None if args.all_namespaces else (args.namespace or "default")
    where = WorkloadFilter(
        args.only_cluster,
        () if namespace is None else (namespace,),
        args.kind,
        args.name,
        args.container,
        options.selector(args.selector),
    )
    report = _recommend(settings, where, strategy, end_ms)
    if not report.recommendations:
        place = "in any namespace" if namespace is None else f"in namespace {namespace}"
        print(
            f"No workload {place} has samples between {rfc3339(report.start_ms)} and "
            f"{rfc3339(report.end_ms)} (--window {args.window}).",
            file=sys.stderr,
        )
    if args.output == "json":
        print(json.dumps(recommend_output.recommendations_json(report), indent=2))
    elif args.output == "csv":
        print(recommend_output.recommendations_csv(report, headers=not args.no_headers), end="")
    elif args.output == "yaml-patch":
        print(recommend_output.patches_yaml(recommend_output.patches(report)), end="")
    elif args.output == "json-patch":
        print(recommend_output.patches_json_lines(recommend_output.patches(report)), end="")
    elif report.recommendations:
        if not args.no_headers:
            sys.stdout.flush()
            print(recommend_output.window_line(report), end="", file=sys.stderr)
        text = recommend_output.recommendations_table(
            report, all_namespaces=namespace is None, headers=not args.no_headers
        )
        print(text, end="")
    return 0
