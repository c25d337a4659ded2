"""``recorder run``, ``demo``, ``poll`` and ``simulate``: the service, one poll, the simulator."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from recorder import commands
from recorder.cli import options
from recorder.poller import PollReport

if TYPE_CHECKING:
    from recorder.simulator import SimulatorConfig


def add_service(subcommands: Any) -> None:
    run = subcommands.add_parser("run", help="the service: poll on a schedule and serve HTTP")
    options.common(run)
    run.add_argument("--listen", help="HOST:PORT of the HTTP server (default 0.0.0.0:8080)")
    options.exposition(run)
    options.access(run)
    run.set_defaults(handler=cmd_run)

    demo = subcommands.add_parser("demo", help="the service against the built-in simulator")
    options.common(demo)
    demo.add_argument(
        "--listen", help=f"HOST:PORT of the HTTP server (default {commands.DEMO_LISTEN})"
    )
    demo.add_argument("--nodes", type=int, default=3, help="simulated nodes (default 3)")
    demo.add_argument("--pods", type=int, default=30, help="simulated pods (default 30)")
    demo.add_argument("--seed", type=int, default=1, help="simulator seed (default 1)")
    options.simulated_changes(demo, rollout_every=commands.DEMO_ROLLOUT_EVERY)
    options.exposition(demo)
    options.access(demo)
    demo.set_defaults(handler=cmd_demo)

    poll = subcommands.add_parser("poll", help="one poll cycle, then exit (non-zero on failure)")
    options.common(poll)
    poll.set_defaults(handler=cmd_poll)


def add_simulate(subcommands: Any) -> None:
    simulate = subcommands.add_parser("simulate", help="serve only the simulated Metrics API")
    simulate.add_argument("--nodes", type=int, default=3)
    simulate.add_argument("--pods", type=int, default=30)
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument(
        "--resolution",
        type=options.positive_seconds,
        default="15s",
        help="metric resolution: a duration (default 15s)",
    )
    simulate.add_argument(
        "--scrape-spread",
        type=options.whole_seconds,
        default="0s",
        help="stamp each node's samples and its pods' up to this long before the bucket's "
        "time (whole seconds, a fixed offset per node), as metrics-server reports each "
        "kubelet's own scrape time; shorter than --resolution (default 0s: one timestamp)",
    )
    options.simulated_changes(simulate, rollout_every="0s")
    simulate.add_argument("--listen", default="127.0.0.1:8443", help="HOST:PORT")
    simulate.add_argument("--serve-v1", action="store_true", help="also serve metrics.k8s.io/v1")
    simulate.add_argument(
        "--background",
        action="store_true",
        help="start detached and return once it serves (and wrote --write-kubeconfig); prints "
        "its pid to stop it with kill",
    )
    options.log_level(simulate)
    from recorder.simulator.options import add_arguments as add_simulator_arguments

    add_simulator_arguments(simulate)
    simulate.set_defaults(handler=cmd_simulate)


def cmd_run(args: argparse.Namespace) -> int:
    commands.run_service(commands.settings_from_args(args))


def demo_simulator(args: argparse.Namespace) -> SimulatorConfig:
    """The cluster ``recorder demo`` simulates, from its flags."""
    from recorder.simulator import SimulatorConfig

    return SimulatorConfig(
        nodes=args.nodes,
        pods=args.pods,
        seed=args.seed,
        churn_per_hour=args.churn,
        rollout_every_seconds=args.rollout_every,
    )


def cmd_demo(args: argparse.Namespace) -> int:
    commands.run_demo(commands.demo_settings(args), demo_simulator(args))


def _print_report(report: PollReport) -> None:
    """What the poll stored, resource by resource; each failure said once (nodes and pods
    failing for one reason, such as an unreachable API server, print it once)."""
    said: dict[str, str] = {}
    for outcome in report.outcomes:
        line = (
            f"{outcome.resource}: {outcome.samples} samples, {outcome.written} stored, "
            f"{outcome.skipped} already stored, {len(outcome.rejections)} rejected"
        )
        if outcome.error is not None:
            message = str(outcome.error)
            if message in said:
                line += f" — FAILED: the same error as {said[message]}"
            else:
                line += f" — FAILED: {message}"
                said[message] = outcome.resource
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


def _without(argv: list[str], flag: str) -> list[str]:
    return [arg for arg in argv if arg != flag]


def cmd_simulate(args: argparse.Namespace) -> int:
    from recorder.settings import parse_listen
    from recorder.simulator import SimulatorConfig
    from recorder.simulator.options import options_from_args, run

    host, port = parse_listen(args.listen)
    options = options_from_args(args)
    if args.background:
        from recorder.cli.background import start_detached

        pid = start_detached(
            _without(args.argv, "--background"),
            host=host,
            port=port,
            writes=options.write_kubeconfig,
        )
        scheme = "https" if options.tls else "http"
        print(f"simulated Metrics API at {scheme}://{host}:{port} (pid {pid}); stop it: kill {pid}")
        return 0
    config = SimulatorConfig(
        nodes=args.nodes,
        pods=args.pods,
        seed=args.seed,
        resolution_seconds=args.resolution,
        scrape_spread_seconds=args.scrape_spread,
        churn_per_hour=args.churn,
        rollout_every_seconds=args.rollout_every,
    )
    run(config, host, port, options, serve_v1=args.serve_v1)
    return 0
