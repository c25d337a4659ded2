"""``recorder migrate``, ``maintain`` and ``copy``: the database's schema and upkeep, and moving
a history to another database."""

from __future__ import annotations

import argparse
from typing import Any

from recorder import commands
from recorder.cli import options
from recorder.cli.progress import Bars


def add_maintenance(subcommands: Any) -> None:
    migrate = subcommands.add_parser("migrate", help="upgrade the database to the newest schema")
    options.database_url(migrate)
    options.log_level(migrate)
    migrate.set_defaults(handler=cmd_migrate)

    maintain = subcommands.add_parser(
        "maintain", help="one round of compaction and retention (run does it on a schedule)"
    )
    options.database_url(maintain)
    options.log_level(maintain)
    maintain.set_defaults(handler=cmd_maintain)

    copy = subcommands.add_parser(
        "copy", help="copy the whole history to another database (resumable: run it again)"
    )
    copy.add_argument("--from", dest="source", required=True, help="source database URL")
    copy.add_argument("--to", dest="target", required=True, help="target database URL")
    options.log_level(copy)
    copy.set_defaults(handler=cmd_copy)


def cmd_maintain(args: argparse.Namespace) -> int:
    with Bars() as bars:
        report = commands.maintain_once(
            commands.settings_from_args(args), progress=bars if bars.enabled else None
        )
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
    with Bars() as bars:
        report = commands.copy_history(
            commands.settings_from_args(args),
            args.source,
            args.target,
            on_start=lambda line: print(line, flush=True),
            progress=bars,
        )
    print(
        f"series: {report.series}; chunks copied: {report.chunks_copied}, merged with the "
        f"target's: {report.chunks_merged} (already there: {report.chunks_already_there}); "
        f"pods' statistics computed again: {report.pods_recomputed}; day rollups rebuilt: "
        f"{report.rollup_days_rebuilt}"
    )
    print(
        f"head samples written: {report.head_samples_written} (already there: "
        f"{report.head_samples_already_there}; left out, expired in the source: "
        f"{report.head_samples_expired}; refused by the target: {report.head_samples_rejected})"
    )
    print(
        f"verified: the source holds {report.source_samples} samples, "
        f"the target {report.target_samples} (before the copy: {report.target_samples_before})"
    )
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    print(commands.migrate(commands.settings_from_args(args)))
    return 0
