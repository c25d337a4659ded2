"""The ``recorder`` command line: run, demo, poll, migrate, simulate.

This is the edge: it reads flags and the environment once (into ``Settings``), builds the
objects and wires them together. Nothing below it reads the environment.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn

from recorder import __version__
from recorder.domain import Agg, HistoryQuery, QueryKind, Resource, SeriesFilter
from recorder.errors import ConfigError, RecorderError
from recorder.poller import PollReport
from recorder.settings import Settings, load_settings
from recorder.store import Store
from recorder.store.engine import redact
from recorder.worker import build_poll_path, configure_logging, open_write_store, ready_store

log = logging.getLogger("recorder")

DEMO_LISTEN = "127.0.0.1:8080"
DEMO_INTERVAL_SECONDS = 15.0


def _common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("common options (each also RECORDER_<NAME>)")
    group.add_argument("--database-url", help="SQLAlchemy URL (default sqlite:///recorder.db)")
    group.add_argument("--api-url", help="plain Metrics API base URL, e.g. kubectl proxy's")
    group.add_argument("--kubeconfig", help="kubeconfig file (default: KUBECONFIG)")
    group.add_argument("--context", help="kubeconfig context (default: current-context)")
    group.add_argument(
        "--namespace",
        action="append",
        help="only pods of this namespace (repeatable); skips nodes",
    )
    group.add_argument("--interval", help="poll interval: seconds or a duration (default 30s)")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recorder",
        description="Keeps the history of Kubernetes CPU and memory usage from metrics.k8s.io.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="the service: poll on a schedule and serve HTTP")
    _common(run)
    run.add_argument("--listen", help="HOST:PORT of the HTTP server (default 0.0.0.0:8080)")
    _exposition_options(run)

    demo = commands.add_parser("demo", help="the service against the built-in simulator")
    _common(demo)
    demo.add_argument("--listen", help=f"HOST:PORT of the HTTP server (default {DEMO_LISTEN})")
    demo.add_argument("--nodes", type=int, default=3, help="simulated nodes (default 3)")
    demo.add_argument("--pods", type=int, default=30, help="simulated pods (default 30)")
    demo.add_argument("--seed", type=int, default=1, help="simulator seed (default 1)")
    _exposition_options(demo)

    poll = commands.add_parser("poll", help="one poll cycle, then exit (non-zero on failure)")
    _common(poll)

    migrate = commands.add_parser("migrate", help="upgrade the database to the newest schema")
    migrate.add_argument("--database-url", help="SQLAlchemy URL (default sqlite:///recorder.db)")
    migrate.add_argument("--log-level")

    maintain = commands.add_parser(
        "maintain", help="one round of compaction and retention (run does it on a schedule)"
    )
    maintain.add_argument("--database-url", help="SQLAlchemy URL (default sqlite:///recorder.db)")
    maintain.add_argument("--log-level")

    copy = commands.add_parser(
        "copy", help="copy the whole history to another database (resumable: run it again)"
    )
    copy.add_argument("--from", dest="source", required=True, help="source database URL")
    copy.add_argument("--to", dest="target", required=True, help="target database URL")
    copy.add_argument("--log-level")

    query = commands.add_parser("query", help="the history API from the command line")
    query.add_argument("--database-url", help="SQLAlchemy URL (default sqlite:///recorder.db)")
    query.add_argument("--resource", required=True, choices=["cpu", "memory"])
    query.add_argument("--kind", default="container", choices=["node", "container", "pod"])
    for name in ("node", "namespace", "pod", "container", "selector", "start", "end", "step"):
        query.add_argument(f"--{name}")
    query.add_argument("--agg", default="avg", choices=[a.value for a in Agg])
    query.add_argument("--format", default="table", choices=["table", "json", "csv"])
    query.add_argument("--log-level")

    top = commands.add_parser("top", help="like kubectl top, over a past window")
    top.add_argument("what", choices=["pods", "nodes"])
    top.add_argument("--database-url", help="SQLAlchemy URL (default sqlite:///recorder.db)")
    scope = top.add_mutually_exclusive_group()
    scope.add_argument("-A", "--all-namespaces", action="store_true")
    scope.add_argument("--namespace", help="pods of this namespace (default: default)")
    top.add_argument("--selector", "-l", help="label selector on pod labels")
    top.add_argument("--since", default="1h", help="window length: 1h, 24h, 7d (default 1h)")
    top.add_argument("--end", help="end of the window (default now): RFC 3339, unix seconds")
    top.add_argument("--agg", default="avg", choices=[a.value for a in Agg if a is not Agg.COUNT])
    top.add_argument("--sort-by", default="cpu", choices=["cpu", "memory"])
    top.add_argument("-n", "--limit", type=int, default=20, help="rows to show (default 20)")
    top.add_argument("--log-level")

    simulate = commands.add_parser("simulate", help="serve only the simulated Metrics API")
    simulate.add_argument("--nodes", type=int, default=3)
    simulate.add_argument("--pods", type=int, default=30)
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument("--resolution", default="15s", help="metric resolution (default 15s)")
    simulate.add_argument("--listen", default="127.0.0.1:8443", help="HOST:PORT")
    simulate.add_argument("--serve-v1", action="store_true", help="also serve metrics.k8s.io/v1")
    simulate.add_argument("--log-level")
    from recorder.simulator.options import add_arguments as add_simulator_arguments

    add_simulator_arguments(simulate)
    return parser


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    names = ("database_url", "api_url", "kubeconfig", "context", "namespace", "listen")
    overrides = {name: getattr(args, name, None) for name in names}
    overrides["interval_seconds"] = getattr(args, "interval", None)
    overrides["log_level"] = getattr(args, "log_level", None)
    for name in ("metrics_containers", "metrics_namespace", "metrics_exclude_namespace"):
        overrides[name] = getattr(args, name, None)
    overrides.update(extra)
    return load_settings(**overrides)


def _exit_now(code: int) -> NoReturn:
    """End the service process once it has cleaned up: a query thread stuck in a database
    that does not answer must not keep a stopping pod alive past its grace period."""
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def cmd_run(args: argparse.Namespace) -> int:
    from recorder.service import serve

    return _exit_now(serve(_settings(args)))


def cmd_demo(args: argparse.Namespace) -> int:
    from recorder.service import serve
    from recorder.simulator import ClusterModel, SimulatorConfig, SimulatorServer, create_app

    extra: dict[str, Any] = {}
    if args.listen is None and "RECORDER_LISTEN" not in os.environ:
        extra["listen"] = DEMO_LISTEN
    if args.interval is None and "RECORDER_INTERVAL" not in os.environ:
        extra["interval_seconds"] = DEMO_INTERVAL_SECONDS
    settings = _settings(args, **extra)
    config = SimulatorConfig(nodes=args.nodes, pods=args.pods, seed=args.seed)
    simulated = create_app(ClusterModel(config))
    with SimulatorServer(simulated) as simulator:
        host, port = settings.listen_address
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        base = f"http://{shown}:{port}"
        banner = [
            f"Simulated Metrics API ({args.nodes} nodes, {args.pods} pods): {simulator.url}",
            f"Recording every {settings.interval_seconds:g}s into "
            f"{redact(settings.database_url.get_secret_value())}",
            f"  Prometheus metrics: {base}/metrics",
            f"  History (JSON):     {base}/api/v1/history?resource=cpu&kind=node",
            f"  Readiness:          {base}/readyz",
            "Press Ctrl+C to stop.",
        ]
        code = serve(settings, api_url=simulator.url, banner=banner)
    return _exit_now(code)


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
    settings = _settings(args)
    path = build_poll_path(settings)
    try:
        report = path.poller.poll_once()
    finally:
        path.close()
    _print_report(report)
    if report.buffered:
        print(f"{report.buffered} samples wait for the database (spooled for the next run)")
    return 0 if report.ok else 1


def cmd_maintain(args: argparse.Namespace) -> int:
    settings = _settings(args)
    store = ready_store(open_write_store(settings))
    try:
        report = store.maintain(now_ms=int(time.time() * 1000))
    finally:
        store.close()
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
    from recorder.store.copy import HistoryCopier

    settings = _settings(args)
    source = ready_store(open_write_store(settings, args.source), migrate_sqlite=False)
    try:
        target = open_write_store(settings, args.target)
        try:
            target.migrate()
            print(f"copying {redact(args.source)} -> {redact(args.target)}", flush=True)
            report = HistoryCopier(source, target, progress=lambda line: None).run()
        finally:
            target.close()
    finally:
        source.close()
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


def _query_store(args: argparse.Namespace) -> Store:
    settings = _settings(args)
    store = open_write_store(settings)
    if not store.schema_is_current():
        store.close()
        raise ConfigError(f"{store.display_url} holds no recorder history at the current schema")
    return store


def cmd_query(args: argparse.Namespace) -> int:
    from recorder.api import params, render

    store = _query_store(args)
    try:
        now_ms = int(time.time() * 1000)
        start_ms, end_ms = params.parse_range(
            args.start, args.end, now_ms=now_ms, default_ms=3_600_000, max_range_ms=2**62
        )
        step_ms = params.parse_step_ms(args.step)
        resource, kind, agg = Resource(args.resource), QueryKind(args.kind), Agg(args.agg)
        where = SeriesFilter(
            kind,
            args.node,
            args.namespace,
            args.pod,
            args.container,
            params.parse_selector(args.selector),
        )
        result = store.history(
            HistoryQuery(resource, where, start_ms, end_ms, step_ms, agg), max_points=10**7
        )
    finally:
        store.close()
    shown = agg if step_ms is not None else None
    if args.format == "json":
        print(json.dumps(render.history_json(result, resource, kind.value, step_ms, shown)))
    elif args.format == "csv":
        print(render.history_csv(result, resource, shown), end="")
    else:
        print(render.history_table(result, resource, shown), end="")
    return 0


def cmd_top(args: argparse.Namespace) -> int:
    from recorder.api import params, render

    store = _query_store(args)
    try:
        now_ms = int(time.time() * 1000)
        end_ms = params.parse_time_ms(args.end, "--end", now_ms) if args.end else now_ms
        since_ms = params.parse_step_ms(args.since) or 3_600_000
        nodes = args.what == "nodes"
        namespace = None if args.all_namespaces or nodes else (args.namespace or "default")
        where = SeriesFilter(
            QueryKind.NODE if nodes else QueryKind.CONTAINER,
            namespace=namespace,
            selector=params.parse_selector(args.selector),
        )
        rows = store.top(where, end_ms - since_ms, end_ms, Agg(args.agg))
    finally:
        store.close()
    key = Resource.CPU if args.sort_by == "cpu" else Resource.MEMORY
    rows.sort(key=lambda r: (-(r.cpu if key is Resource.CPU else r.memory), *r.labels.values()))
    shown = rows[: max(args.limit, 0)]
    if not shown:
        where_text = "in any namespace" if namespace is None else f"in namespace {namespace}"
        print(f"No {args.what} recorded {where_text} in the last {args.since}.", file=sys.stderr)
        return 0
    header = ["NAME"] if nodes else ["NAMESPACE", "NAME"] if namespace is None else ["NAME"]
    header += ["CPU(cores)", "MEMORY(bytes)"]
    table_rows = []
    for row in shown:
        names = (
            [row.labels["node"]]
            if nodes
            else (
                [row.labels["namespace"], row.labels["pod"]]
                if namespace is None
                else [row.labels["pod"]]
            )
        )
        table_rows.append(
            [
                *names,
                render.kubectl_value(Resource.CPU, row.cpu),
                render.kubectl_value(Resource.MEMORY, row.memory),
            ]
        )
    print(render.table(header, table_rows), end="")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    store = open_write_store(settings)
    try:
        store.migrate()
        print(f"{store.display_url} is at the newest schema")
    finally:
        store.close()
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from recorder import units
    from recorder.settings import parse_listen
    from recorder.simulator import SimulatorConfig
    from recorder.simulator.options import options_from_args, run

    host, port = parse_listen(args.listen)
    config = SimulatorConfig(
        nodes=args.nodes,
        pods=args.pods,
        seed=args.seed,
        resolution_seconds=units.parse_interval_seconds(args.resolution),
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level or os.environ.get("RECORDER_LOG_LEVEL"))
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
