"""The ``recorder`` command line: flags in, text out.

It parses the flags, hands them to ``commands`` (which builds ``Settings`` once and wires the
service, a poll, maintenance...) or to the query layer, and prints what comes back: reports
line by line, query results as ``recorder.query.formats`` writes them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from recorder import __version__, commands, timeutil
from recorder.domain import Agg, HistoryQuery, HistoryResult, QueryKind, Resource, SeriesFilter
from recorder.errors import DurationError, RecorderError
from recorder.poller import PollReport
from recorder.query import engine, formats, params
from recorder.settings import Settings
from recorder.timeutil import HOUR_MS

log = logging.getLogger("recorder")


def _positive_seconds(text: str) -> float:
    """A duration flag (``timeutil``'s grammar) in seconds, more than zero; argparse names the
    flag in its message."""
    try:
        seconds = timeutil.parse_duration_seconds(text)
    except DurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be longer than zero, e.g. 30s")
    return seconds


def _common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("common options (each also RECORDER_<NAME>)")
    group.add_argument("--database-url", help="SQLAlchemy URL (default sqlite:///recorder.db)")
    group.add_argument("--api-url", help="plain Metrics API base URL, e.g. kubectl proxy's")
    group.add_argument("--kubeconfig", help="kubeconfig file (default: KUBECONFIG)")
    group.add_argument("--context", help="kubeconfig context (default: current-context)")
    group.add_argument(
        "--cluster",
        help="name of this cluster, the cluster label of every series (default: default); "
        "set it before the first run: changing it starts new series",
    )
    group.add_argument(
        "--namespace",
        action="append",
        help="only pods of this namespace (repeatable); skips nodes",
    )
    group.add_argument(
        "--interval",
        type=_positive_seconds,
        help="poll interval: a duration such as 30s, 1m30s or 45 (seconds) (default 30s)",
    )
    group.add_argument("--log-level", help="DEBUG, INFO (default), WARNING, ERROR")


def _exposition_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("/metrics cardinality (each also RECORDER_<NAME>)")
    group.add_argument(
        "--metrics-containers",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="per-container gauges on /metrics (default on; recording is not affected)",
    )
    group.add_argument(
        "--metrics-namespace",
        action="append",
        metavar="PATTERN",
        help="only containers of matching namespaces on /metrics (repeatable; e.g. 'team-*')",
    )
    group.add_argument(
        "--metrics-exclude-namespace",
        action="append",
        metavar="PATTERN",
        help="no containers of matching namespaces on /metrics (repeatable; wins)",
    )


def _cluster_filter(parser: argparse.ArgumentParser) -> None:
    # Its own dest: the ``cluster`` setting names the cluster a recorder writes, not a filter.
    parser.add_argument(
        "--cluster", dest="only_cluster", metavar="NAME", help="only series of this cluster"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recorder",
        description="Keeps the history of Kubernetes CPU and memory usage from metrics.k8s.io.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = subcommands.add_parser("run", help="the service: poll on a schedule and serve HTTP")
    _common(run)
    run.add_argument("--listen", help="HOST:PORT of the HTTP server (default 0.0.0.0:8080)")
    _exposition_options(run)

    demo = subcommands.add_parser("demo", help="the service against the built-in simulator")
    _common(demo)
    demo.add_argument(
        "--listen", help=f"HOST:PORT of the HTTP server (default {commands.DEMO_LISTEN})"
    )
    demo.add_argument("--nodes", type=int, default=3, help="simulated nodes (default 3)")
    demo.add_argument("--pods", type=int, default=30, help="simulated pods (default 30)")
    demo.add_argument("--seed", type=int, default=1, help="simulator seed (default 1)")
    _exposition_options(demo)

    poll = subcommands.add_parser("poll", help="one poll cycle, then exit (non-zero on failure)")
    _common(poll)

    migrate = subcommands.add_parser("migrate", help="upgrade the database to the newest schema")
    migrate.add_argument("--database-url", help="SQLAlchemy URL (default sqlite:///recorder.db)")
    migrate.add_argument("--log-level")

    maintain = subcommands.add_parser(
        "maintain", help="one round of compaction and retention (run does it on a schedule)"
    )
    maintain.add_argument("--database-url", help="SQLAlchemy URL (default sqlite:///recorder.db)")
    maintain.add_argument("--log-level")

    copy = subcommands.add_parser(
        "copy", help="copy the whole history to another database (resumable: run it again)"
    )
    copy.add_argument("--from", dest="source", required=True, help="source database URL")
    copy.add_argument("--to", dest="target", required=True, help="target database URL")
    copy.add_argument("--log-level")

    query = subcommands.add_parser("query", help="the history API from the command line")
    query.add_argument("--database-url", help="SQLAlchemy URL (default sqlite:///recorder.db)")
    query.add_argument("--resource", required=True, choices=["cpu", "memory"])
    query.add_argument("--kind", default="container", choices=["node", "container", "pod"])
    for name in ("node", "namespace", "pod", "container", "selector", "start", "end", "step"):
        query.add_argument(f"--{name}")
    _cluster_filter(query)
    query.add_argument("--agg", default="avg", choices=[a.value for a in Agg])
    query.add_argument("--format", default="table", choices=["table", "json", "csv"])
    query.add_argument("--log-level")

    top = subcommands.add_parser("top", help="like kubectl top, over a past window")
    top.add_argument("what", choices=["pods", "nodes"])
    top.add_argument("--database-url", help="SQLAlchemy URL (default sqlite:///recorder.db)")
    scope = top.add_mutually_exclusive_group()
    scope.add_argument("-A", "--all-namespaces", action="store_true")
    scope.add_argument("--namespace", help="pods of this namespace (default: default)")
    top.add_argument("--selector", "-l", help="label selector on pod labels")
    _cluster_filter(top)
    top.add_argument(
        "--since", default="1h", help="window length: a duration (1h, 90m, 1.5d, 2w; default 1h)"
    )
    top.add_argument("--end", help="end of the window (default now): RFC 3339, unix seconds")
    top.add_argument("--agg", default="avg", choices=[a.value for a in Agg if a is not Agg.COUNT])
    top.add_argument("--sort-by", default="cpu", choices=["cpu", "memory"])
    top.add_argument("-n", "--limit", type=int, default=20, help="rows to show (default 20)")
    top.add_argument("--log-level")

    simulate = subcommands.add_parser("simulate", help="serve only the simulated Metrics API")
    simulate.add_argument("--nodes", type=int, default=3)
    simulate.add_argument("--pods", type=int, default=30)
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument(
        "--resolution",
        type=_positive_seconds,
        default="15s",
        help="metric resolution: a duration (default 15s)",
    )
    simulate.add_argument("--listen", default="127.0.0.1:8443", help="HOST:PORT")
    simulate.add_argument("--serve-v1", action="store_true", help="also serve metrics.k8s.io/v1")
    simulate.add_argument("--log-level")
    from recorder.simulator.options import add_arguments as add_simulator_arguments

    add_simulator_arguments(simulate)
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    commands.run_service(commands.settings_from_args(args))


def cmd_demo(args: argparse.Namespace) -> int:
    settings = commands.demo_settings(args)
    commands.run_demo(settings, nodes=args.nodes, pods=args.pods, seed=args.seed)


def _print_report(report: PollReport) -> None:
    for outcome in report.outcomes:
        line = (
            f"{outcome.resource}: {outcome.samples} samples, {outcome.written} stored, "
            f"{outcome.skipped} already stored, {len(outcome.rejections)} rejected"
        )
        if outcome.error is not None:
            line += f" — FAILED: {outcome.error}"
        print(line)
        for rejection in outcome.rejections:
            where = f"{rejection.namespace}/" if rejection.namespace else ""
            print(f"  rejected {where}{rejection.name}: {rejection.reason}: {rejection.detail}")
    if report.flushed_from_buffer:
        print(f"wrote {report.flushed_from_buffer} samples held from earlier polls")


def cmd_poll(args: argparse.Namespace) -> int:
    report = commands.poll_once(commands.settings_from_args(args))
    _print_report(report)
    if report.buffered:
        print(f"{report.buffered} samples wait for the database (spooled for the next run)")
    return 0 if report.ok else 1


def cmd_maintain(args: argparse.Namespace) -> int:
    report = commands.maintain_once(commands.settings_from_args(args))
    if report.skipped:
        print("another replica holds the maintenance lock; nothing done")
        return 0
    c, r = report.compaction, report.retention
    print(
        f"compacted {c.blocks} blocks: {c.series} series-blocks, {c.samples} samples, "
        f"{c.duplicates_dropped} duplicates dropped, in {c.seconds:.1f}s"
    )
    print(
        f"retention: {r.payloads_dropped} full-resolution payloads dropped, "
        f"{r.chunks_deleted} block statistics and {r.rollups_deleted} day rollups deleted, "
        f"{r.series_deleted} series deleted"
    )
    return 0


def cmd_copy(args: argparse.Namespace) -> int:
    report = commands.copy_history(
        commands.settings_from_args(args),
        args.source,
        args.target,
        on_start=lambda line: print(line, flush=True),
    )
    print(
        f"series: {report.series}; chunks copied: {report.chunks_copied} "
        f"(already there: {report.chunks_already_there}); head samples written: "
        f"{report.head_samples_written} (already there: {report.head_samples_already_there})"
    )
    print(
        f"verified: the source holds {report.source_samples} samples, "
        f"the target {report.target_samples}"
    )
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    shown = commands.migrate(commands.settings_from_args(args))
    print(f"{shown} is at the newest schema")
    return 0


def _history(settings: Settings, query: HistoryQuery) -> HistoryResult:
    """The one call site of ``recorder query`` into the history."""
    store = commands.open_query_store(settings)
    try:
        return engine.history(store, query, max_points=10**7)
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
    )
    result = _history(settings, HistoryQuery(resource, where, start_ms, end_ms, step_ms, agg))
    shown = agg if step_ms is not None else None
    print(formats.history_text(args.format, result, resource, kind, step_ms, shown), end="")
    return 0


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


def cmd_simulate(args: argparse.Namespace) -> int:
    from recorder.settings import parse_listen
    from recorder.simulator import SimulatorConfig
    from recorder.simulator.options import options_from_args, run

    host, port = parse_listen(args.listen)
    config = SimulatorConfig(
        nodes=args.nodes, pods=args.pods, seed=args.seed, resolution_seconds=args.resolution
    )
    run(config, host, port, options_from_args(args), serve_v1=args.serve_v1)
    return 0


COMMANDS = {
    "run": cmd_run,
    "demo": cmd_demo,
    "poll": cmd_poll,
    "migrate": cmd_migrate,
    "maintain": cmd_maintain,
    "copy": cmd_copy,
    "query": cmd_query,
    "top": cmd_top,
    "simulate": cmd_simulate,
}


_TIME_FLAGS = ("--start", "--end")


def _relative_times_attached(argv: Sequence[str]) -> list[str]:
    """``--start -24h`` as ``--start=-24h``: argparse takes a value that starts with a minus
    for an unknown flag, and a relative time always does."""
    out: list[str] = []
    for arg in argv:
        if (
            out
            and out[-1] in _TIME_FLAGS
            and len(arg) > 1
            and arg[0] == "-"
            and arg[1] in "0123456789."
        ):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(_relative_times_attached(given))
    commands.configure_logging(args.log_level or os.environ.get("RECORDER_LOG_LEVEL"))
    try:
        return COMMANDS[args.command](args)
    except RecorderError as exc:
        print(f"recorder {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: one line for the user, the traceback in the debug log
        log.debug("unexpected error", exc_info=True)
        print(
            f"recorder {args.command}: unexpected error: {exc!r} (run with --log-level DEBUG "
            "for details, and please report it)",
            file=sys.stderr,
        )
        return 70
