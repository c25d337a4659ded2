"""The ``recorder`` command line: flags in, text out.

Each command's flags and handler live in a module of this package (``service``: run, demo,
poll, simulate; ``maintenance``: migrate, maintain, copy; ``history``: query; ``top``;
``recommend``). They hand the flags to ``recorder.commands`` (which builds ``Settings`` once
and wires the service, a poll, maintenance...) or to the query layer, and print what comes
back. ``main`` parses, runs the handler and turns every error into one line on stderr and an
exit code.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from recorder import __version__, commands
from recorder.errors import ConfigError, RecorderError
from recorder.settings import parse_log_level

log = logging.getLogger("recorder")


def build_parser() -> argparse.ArgumentParser:
    from recorder.cli.history import add_history
    from recorder.cli.maintenance import add_maintenance
    from recorder.cli.recommend import add_recommend
    from recorder.cli.service import add_service, add_simulate
    from recorder.cli.top import add_top

    parser = argparse.ArgumentParser(
        prog="recorder",
        description="Keeps the history of Kubernetes CPU and memory usage from metrics.k8s.io.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_service(subcommands)
    add_maintenance(subcommands)
    add_history(subcommands)
    add_top(subcommands)
    add_recommend(subcommands)
    add_simulate(subcommands)
    return parser


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


def _log_level(args: argparse.Namespace) -> str | None:
    """``--log-level`` (argparse checked it), else ``RECORDER_LOG_LEVEL``; a ``ConfigError``
    naming the variable when it is not a level."""
    if args.log_level is not None:
        return str(args.log_level)
    variable = os.environ.get("RECORDER_LOG_LEVEL")
    if not variable:
        return None
    try:
        return parse_log_level(variable)
    except ValueError as exc:
        raise ConfigError(f"RECORDER_LOG_LEVEL: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(_relative_times_attached(given))
    args.argv = list(given)  # as typed, for a command that starts itself again (--background)
    try:
        commands.configure_logging(_log_level(args))
    except ConfigError as exc:
        print(f"recorder {args.command}: error: {exc}", file=sys.stderr)
        return 2
    try:
        code: int = args.handler(args)
        return code
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
