"""What each ``recorder`` command does, wired from settings: the service, the demo, one poll,
one maintenance round, a migration, a copy, and the store the query commands read.

``recorder.cli`` parses the flags and prints; this module builds ``Settings`` from the flags (once,
at the edge), opens the stores and builds the poll path. Nothing here prints except the
service's own banner and log.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from recorder.errors import ConfigError
from recorder.poller import PollReport
from recorder.settings import Settings, load_settings
from recorder.store import Store, redact
from recorder.store.compactor import Progress, no_progress
from recorder.store.copy import CopyReport, HistoryCopier
from recorder.store.deletion import Doomed
from recorder.store.migrate import current_revision, head_revision
from recorder.store.renaming import renamed_sqlite_copy, sqlite_path
from recorder.store.sql import MaintenanceReport, missing_sqlite_file
from recorder.timeutil import format_duration, now_ms
from recorder.worker import (
    build_poll_path,
    configure_logging,
    migrate_to_newest,
    open_write_store,
    ready_store,
)

if TYPE_CHECKING:
    from recorder.simulator import SimulatorConfig

__all__ = [
    "DEMO_INTERVAL_SECONDS",
    "DEMO_LISTEN",
    "DEMO_ROLLOUT_EVERY",
    "configure_logging",
    "copy_history",
    "demo_settings",
    "exit_now",
    "maintain_once",
    "migrate",
    "open_query_store",
    "poll_once",
    "run_demo",
    "run_service",
    "settings_from_args",
]

DEMO_LISTEN = "127.0.0.1:8080"
DEMO_INTERVAL_SECONDS = 15.0
DEMO_ROLLOUT_EVERY = "10m"
"""The demo's Deployments roll out this often, so its workloads show pods replaced."""

_SETTINGS_FLAGS = (
    "database_url",
    "api_url",
    "kubeconfig",
    "context",
    "cluster",
    "namespace",
    "listen",
    "log_level",
    "metrics_containers",
    "metrics_namespace",
    "metrics_exclude_namespace",
    "auth",
    "auth_token_file",
    "rate_limit",
    "rate_limit_burst",
    "tls_cert_file",
    "tls_key_file",
)


def settings_from_args(args: argparse.Namespace, **extra: Any) -> Settings:
    """``Settings`` from the environment with the command's flags (those it has and were
    given) and ``extra`` on top."""
    overrides = {name: getattr(args, name, None) for name in _SETTINGS_FLAGS}
    overrides["interval_seconds"] = getattr(args, "interval", None)
    overrides.update(extra)
    return load_settings(**overrides)


def demo_settings(args: argparse.Namespace) -> Settings:
    """``settings_from_args``, with the demo's listen address and interval unless a flag or the
    environment sets them."""
    extra: dict[str, Any] = {}
    if getattr(args, "listen", None) is None and "RECORDER_LISTEN" not in os.environ:
        extra["listen"] = DEMO_LISTEN
    if getattr(args, "interval", None) is None and "RECORDER_INTERVAL" not in os.environ:
        extra["interval_seconds"] = DEMO_INTERVAL_SECONDS
    return settings_from_args(args, **extra)


def exit_now(code: int) -> NoReturn:
    """End the service process once it has cleaned up: a query thread stuck in a database
    that does not answer must not keep a stopping pod alive past its grace period."""
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def run_service(settings: Settings) -> NoReturn:
    """``recorder run``: the service until SIGTERM, then exit with its code."""
    from recorder.service import serve

    exit_now(serve(settings))


def run_demo(settings: Settings, config: SimulatorConfig) -> NoReturn:
    """``recorder demo``: the service against a simulator of ``config``, which also serves what
    ``kubectl`` reads (metrics and cluster objects), through a kubeconfig the banner names (in a
    private temporary folder, removed at exit)."""
    from recorder.service import serve
    from recorder.simulator import ClusterModel, SimulatorServer, create_app
    from recorder.simulator.kubeconfig import kubeconfig_document, write_kubeconfig

    nodes, pods = config.nodes, config.pods
    simulated = create_app(ClusterModel(config), core_api=True)
    with tempfile.TemporaryDirectory(prefix="recorder-demo-") as folder:
        with SimulatorServer(simulated) as simulator:
            kubeconfig = write_kubeconfig(
                Path(folder) / "kubeconfig", kubeconfig_document(simulator.url)
            )
            host, port = settings.listen_address
            shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
            base = f"http://{shown}:{port}"
            banner = [
                f"Simulated Metrics API ({nodes} nodes, {pods} pods): {simulator.url}",
                f"  {_changes(config)}",
                f"Recording every {settings.interval_seconds:g}s into "
                f"{redact(settings.database_url.get_secret_value())}",
                f"  History page:       {base}/",
                f"  API docs:           {base}/docs",
                f"  Prometheus metrics: {base}/metrics",
                f"  History (JSON):     {base}/api/v1/history?resource=cpu&kind=node",
                f"  Readiness:          {base}/readyz",
                f"  kubectl top nodes:  kubectl --kubeconfig {kubeconfig} top nodes",
                "Press Ctrl+C to stop.",
            ]
            code = serve(settings, api_url=simulator.url, banner=banner)
    exit_now(code)


def _changes(config: SimulatorConfig) -> str:
    """How the demo's cluster changes, in one banner line."""
    period = config.rollout_every_seconds
    rollouts = (
        f"every Deployment rolls out every {format_duration(round(period * 1000))}"
        if period
        else "no rollouts"
    )
    return f"Pods replaced {config.churn_per_hour:g} times an hour each; {rollouts}"


def poll_once(settings: Settings) -> PollReport:
    """``recorder poll``: one poll cycle through the whole poll path, which is closed after."""
    path = build_poll_path(settings)
    try:
        return path.poller.poll_once()
    finally:
        path.close()


def maintain_once(settings: Settings, *, progress: Progress | None = None) -> MaintenanceReport:
    """``recorder maintain``: one round of compaction and retention, now, in a database that
    exists (a SQLite path with a typo is an error, not a new empty file to maintain)."""
    _require_database(settings.database_url.get_secret_value(), "--database-url")
    store = ready_store(open_write_store(settings))
    try:
        return store.maintain(now_ms=now_ms(), progress=progress)
    finally:
        store.close()


def delete_history(settings: Settings, doomed: Doomed, *, confirmed: bool) -> str:
    """``recorder delete``: one cluster's or namespace's history deleted (``confirmed``), or
    what would be (not ``confirmed``); what was done, in a sentence."""
    store = open_query_store(settings)
    try:
        held = store.series_held(doomed)
        if held == 0:
            return f"{store.display_url} holds no series of {doomed}: nothing to delete"
        if not confirmed:
            raise ConfigError(
                f"this would delete {held} series of {doomed} with all their samples, "
                f"statistics and rollups from {store.display_url}: run again with --yes"
            )
        report = store.delete_history(doomed)
        return (
            f"deleted {doomed} from {store.display_url}: {report.series} series, "
            f"{report.head_rows} head rows, {report.chunks} chunks, {report.rollups} day "
            f"rollups, {report.other_rows} rows of pods, objects and namespace rollups"
        )
    finally:
        store.close()


def migrate(settings: Settings) -> str:
    """``recorder migrate``: the database at the newest schema; what was done, in a sentence."""
    store = open_write_store(settings)
    try:
        done = migrate_to_newest(store)
        if done is None:
            revision, head = current_revision(store.engine), head_revision()
            if revision != head:
                return (
                    f"{store.display_url} is at schema {revision}, later than this release's "
                    f"{head} (a newer release migrated it); nothing to migrate, and this "
                    "release runs on it"
                )
            return f"{store.display_url} is already at the newest schema ({head})"
        return f"migrated {store.display_url} from {done[0]} to {done[1]}"
    finally:
        store.close()


def copy_history(
    settings: Settings,
    source_url: str,
    target_url: str,
    *,
    on_start: Callable[[str], None],
    progress: Progress = no_progress,
    as_cluster: str | None = None,
) -> CopyReport:
    """``recorder copy``: the whole history of ``source_url`` (which must exist) into
    ``target_url`` (created and migrated if need be); ``on_start`` hears which copy begins,
    once both databases are open, and ``progress`` how far it has come. ``as_cluster``: a
    single-cluster SQLite source's history lands under that cluster name."""
    _require_database(source_url, "--from")
    if as_cluster is not None:
        scratch = renamed_sqlite_copy(sqlite_path(source_url), as_cluster)
        try:
            shown = f"copying {redact(source_url)} as cluster {as_cluster} -> {redact(target_url)}"
            return copy_history(
                settings,
                f"sqlite:///{scratch}",
                target_url,
                on_start=lambda _line: on_start(shown),
                progress=progress,
            )
        finally:
            scratch.unlink(missing_ok=True)
    source = ready_store(open_write_store(settings, source_url), migrate_sqlite=False)
    try:
        target = open_write_store(settings, target_url)
        try:
            target.migrate()
            on_start(f"copying {redact(source_url)} -> {redact(target_url)}")
            return HistoryCopier(source, target, progress).run()
        finally:
            target.close()
    finally:
        source.close()


def open_query_store(settings: Settings) -> Store:
    """The store ``recorder query`` and ``recorder top`` read; it must hold recorder history
    at the current schema (nothing is migrated for a read, and a SQLite file is not created)."""
    _require_database(settings.database_url.get_secret_value(), "--database-url")
    store = open_write_store(settings)
    if not store.schema_is_current():
        store.close()
        raise ConfigError(f"{store.display_url} holds no recorder history at the current schema")
    return store


def _require_database(url: str, flag: str) -> None:
    """A command that reads (or maintains) a database must not create an empty SQLite file
    where a path has a typo: it says so, naming the ``flag`` the URL came from."""
    if missing_sqlite_file(url):
        raise ConfigError(f"{redact(url)}: no such file (check {flag})")
