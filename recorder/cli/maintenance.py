"""``recorder migrate``, ``maintain``, ``copy`` and ``delete``: the database's schema and
upkeep, moving a history to another database, and deleting a cluster's or namespace's."""

from __future__ import annotations

import argparse
from typing import Any

from recorder import commands
from recorder.cli import options
from recorder.cli.progress import Bars
from recorder.errors import ConfigError
from recorder.settings import check_cluster
from recorder.store.deletion import Doomed


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
    copy.add_argument(
        "--as-cluster",
        metavar="NAME",
        help="bring a single-cluster SQLite history into a fleet database under this cluster name",
    )
    options.log_level(copy)
    copy.set_defaults(handler=cmd_copy)

    delete = subcommands.add_parser(
        "delete",
        help="delete one cluster's history, or one namespace's of it (asks for --yes)",
    )
    delete.add_argument(
        "--cluster", dest="doomed_cluster", required=True, metavar="NAME", help="its cluster"
    )
    delete.add_argument(
        "--namespace", dest="doomed_namespace", metavar="NAME", help="only this namespace"
    )
    delete.add_argument(
        "--yes", action="store_true", help="delete (without it: say what would be deleted)"
    )
    options.database_url(delete)
    options.log_level(delete)
    delete.set_defaults(handler=cmd_delete)


def cmd_delete(args: argparse.Namespace) -> int:
    for name in ("doomed_cluster", "doomed_namespace"):
        value = getattr(args, name)
        if value is not None and not value.strip():
            raise ConfigError(f"--{name.removeprefix('doomed_')} must not be empty")
    doomed = Doomed(args.doomed_cluster, args.doomed_namespace)
    settings = commands.settings_from_args(args)
    print(commands.delete_history(settings, doomed, confirmed=args.yes))
    return 0


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


def _cluster_name(name: str | None) -> str | None:
    if name is None:
        return None
    try:
        check_cluster(name)
    except ValueError as exc:
        raise ConfigError(f"--as-cluster {exc}") from None
    return name


def cmd_copy(args: argparse.Namespace) -> int:
    with Bars() as bars:
        report = commands.copy_history(
            commands.settings_from_args(args),
            args.source,
            args.target,
            on_start=lambda line: print(line, flush=True),
            progress=bars,
            as_cluster=_cluster_name(args.as_cluster),
        )
    print(
        f"series: {report.series}; chunks copied: {report.chunks_copied}, merged with the "
        f"target's: {report.chunks_merged} (already there: {report.chunks_already_there}); "
        f"pods' statistics computed again: {report.pods_recomputed}; day rollups rebuilt: "
        f"{report.rollup_days_rebuilt}"
    )
    print(
        f"cluster objects' rows copied (workloads, requests and limits, nodes, HPAs): "
        f"{report.objects_copied}; workload statistics copied: {report.workload_stats_copied} "
        f"(blocks merged, read from the samples now: {report.workload_blocks_dropped})"
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
