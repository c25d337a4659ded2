"""The recorder at metrics-server's documented maximum, measured from outside, on both databases.

    python -m bench.scale                                  # 5,000 nodes / 150,000 pods, both
    python -m bench.scale --nodes 100 --pods 3000 --polls 4 --databases sqlite   # quick look
    python -m bench.scale --json scale.json --cgroup       # as the manifest runs it

One simulator (its own process, as metrics-server would be, 15 s resolution, each node's
samples and its pods' stamped with the node's own scrape time within it) serves every measure
of the run. Per database:

1. **floor** (``bench/floor.py``, design §7): median of three passes, one per resolution;
2. ``recorder run`` (server and worker processes) at a 15 s interval, with ``--cgroup`` inside
   a cgroup limited to the CPU and memory the default manifest grants (cgroup v1 or v2, when
   this machine lets us make one), reading the cluster objects too (the simulator serves them
   with ``--core-api``: the first lists, then watches); while it polls:
   - ``/livez`` asked every 100 ms from another process (latency of each answer);
   - ``/metrics`` scraped every 15 s as Prometheus does (OpenMetrics, gzip);
   - one large history query (a whole namespace's raw history of the last minutes);
   - an outage: the database is held locked (SQLite: an exclusive transaction; PostgreSQL:
     an ``ACCESS EXCLUSIVE`` lock on the head) for ``--outage-polls`` polls, then released,
     and what waited is written; the polls wait in a spool folder, as the manifests run the
     recorder, or with ``--buffer memory`` in memory, whose budget they fill;
   - the resident memory of every recorder process summed, sampled every 100 ms;
   then, as at a rollout, a new ``recorder run`` on the history the first one wrote (its
   worker reads back every series and pod's labels), probed, scraped and sampled for
   ``--restart-polls`` polls: phase ``restart``.
3. Reported: steady poll (``recorder_poll_duration_seconds``, fetch to stored: the worker's
   per-poll log line; the median of the polls that began once the first poll's samples and the
   cluster objects' first lists were stored, and ended before the large query and the outage),
   its ratio to the floor, the first poll (series creation), when the cluster objects' first
   lists were stored (``/readyz``), ``/livez`` p50/p99/max over the whole run, peak memory of
   all processes together, the scrape, polls skipped or late (the first ones included, and
   the restarted recorder's: its polls, skipped or late ones, exit code and ERROR lines count
   in the run's).

4. Then, with the simulator stopped, the history questions at ``--history-series`` series
   (200,000 by default; 0 skips them): ``bench.history_scale`` (statistics-only history
   synthesised straight into the tables, said in the output), best of ``--history-repeat``.

Targets (issue 13): poll <= 1.5x floor, ``/livez`` p99 <= 50 ms and max <= 250 ms, all
processes <= 512 MiB, no skipped poll; the history questions within their targets. Memory
is met as the issue measures it: the summed resident memory of every recorder process at
most 512 MiB, or, run in a cgroup of at most 512 MiB (``--cgroup``), no OOM kill in it (the
sum counts the libraries' pages the two processes share once in each: 50-60 MiB at 150,000
pods; the row of proportional memory, PSS, counts them once).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy
import yaml

from bench import history_scale
from bench.crowd import probe, rss_of_tree, wait_http
from bench.floor import Floor
from bench.poll import free_port
from bench.storage import database

RESOLUTION_SECONDS = 15
INTERVAL_SECONDS = 15
ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
_POLL_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ recorder\.worker: poll in ([0-9.]+)s: ", re.M
)
"""A poll's line: when its samples were stored (the log's local time), and how long it took."""


def manifest_resources() -> dict[str, dict[str, str]]:
    """The recorder container's ``resources`` in deploy/base/deployment.yaml."""
    for document in yaml.safe_load_all((ROOT / "deploy/base/deployment.yaml").read_text()):
        if document and document.get("kind") == "Deployment":
            container = document["spec"]["template"]["spec"]["containers"][0]
            return dict(container["resources"])
    raise RuntimeError("no Deployment in deploy/base/deployment.yaml")


def cpu_cores(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def memory_limit_bytes(quantity: str) -> int:
    for suffix, factor in (("Ki", 2**10), ("Mi", 2**20), ("Gi", 2**30)):
        if quantity.endswith(suffix):
            return int(quantity[: -len(suffix)]) * factor
    return int(quantity)


# --- a cgroup as the manifest grants ---------------------------------------------------------


@dataclass
class Cgroup:
    """A CPU quota and a memory limit around the recorder's processes (cgroup v1 or v2)."""

    cores: float
    memory: int
    paths: list[Path] = field(default_factory=list)

    def create(self) -> bool:
        name = f"kmr-bench-{uuid.uuid4().hex[:8]}"
        unified = Path("/sys/fs/cgroup/cgroup.controllers")
        try:
            if unified.exists():
                path = Path("/sys/fs/cgroup") / name
                path.mkdir()
                self.paths = [path]
                (path / "cpu.max").write_text(f"{int(self.cores * 100_000)} 100000")
                (path / "memory.max").write_text(str(self.memory))
                (path / "memory.swap.max").write_text("0")
                return True
            cpu = Path("/sys/fs/cgroup/cpu") / name
            memory = _own_v1_memory_cgroup() / name
            cpu.mkdir()
            self.paths = [cpu]
            memory.mkdir()
            self.paths.append(memory)
            (cpu / "cpu.cfs_period_us").write_text("100000")
            (cpu / "cpu.cfs_quota_us").write_text(str(int(self.cores * 100_000)))
            (memory / "memory.limit_in_bytes").write_text(str(self.memory))
            with contextlib.suppress(OSError):
                (memory / "memory.memsw.limit_in_bytes").write_text(str(self.memory))
            return True
        except OSError as exc:
            print(f"no cgroup ({exc}): measuring without limits", file=sys.stderr)
            self.remove()
            return False

    def wrap(self, command: list[str]) -> list[str]:
        """``command`` started inside the cgroup."""
        joins = " ".join(f"echo $$ > {p / 'cgroup.procs'};" for p in self.paths)
        return ["sh", "-c", f'{joins} exec "$@"', "sh", *command]

    def memory_path(self) -> Path | None:
        """The cgroup that holds the memory controller."""
        for path in self.paths:
            if (path / "memory.stat").exists():
                return path
        return None

    def oom_kills(self) -> int:
        for path in self.paths:
            for name in ("memory.events", "memory.oom_control"):
                with contextlib.suppress(OSError):
                    for line in (path / name).read_text().splitlines():
                        key, _, value = line.partition(" ")
                        if key == "oom_kill":
                            return int(value)
        return 0

    def remove(self) -> None:
        """Remove the cgroups, waiting up to 10 s for their last processes to be gone."""
        deadline = time.monotonic() + 10
        for path in self.paths:
            while path.exists():
                try:
                    path.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        print(f"could not remove {path}", file=sys.stderr)
                        break
                    time.sleep(0.2)


def _own_v1_memory_cgroup() -> Path:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return Path("/sys/fs/cgroup/memory") / path.lstrip("/")
    return Path("/sys/fs/cgroup/memory")


# --- databases -------------------------------------------------------------------------------


@contextlib.contextmanager
def outage(url: str) -> Iterator[None]:
    """The database refuses writes while this lasts (locked, as by a stuck migration)."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=60, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as conn:
        conn.exec_driver_sql("SET lock_timeout = '60s'")
        conn.exec_driver_sql("LOCK TABLE samples_head IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            conn.rollback()
    engine.dispose()


# --- measuring one database ------------------------------------------------------------------


def next_resolution() -> None:
    """Sleep until one second into the next resolution (new values to store)."""
    now = time.time()
    time.sleep(RESOLUTION_SECONDS - now % RESOLUTION_SECONDS + 1)


def measure_floor(api: str, url: str, passes: int) -> dict[str, float]:
    floor = Floor(api, url)
    try:
        runs = []
        for _ in range(passes):
            next_resolution()
            runs.append(floor.once())
    finally:
        floor.close()
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


class Sampler(threading.Thread):
    """Sums the resident memory of a process tree every 100 ms; keeps the peak."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.peaks: dict[int, int] = {}
        self.cpu: dict[int, float] = {}
        """CPU seconds of each process, from when sampling began."""
        self.cpu_start: dict[int, float] = {}
        self.timeline: list[tuple[str, list[int]]] = []
        self.phase = "start"
        """What the run is doing now (set by the main thread): the peaks are kept per phase."""
        self.phase_peaks: dict[str, int] = {}
        self.phase_roles: dict[str, dict[str, int]] = {}
        """Per phase, the peak of the server process and of the worker process(es) each."""
        self.split_peaks: dict[str, int] = {}
        """Peaks of the processes' summed anonymous, file-backed and proportional memory, and
        of the anonymous memory charged to the cgroup (``memory.stat``)."""
        self.cgroup: Path | None = None
        self.last_mark = time.monotonic()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.1):
            total = rss_of_tree(self.pid)
            self.peak = max(self.peak, total)
            self.phase_peaks[self.phase] = max(self.phase_peaks.get(self.phase, 0), total)
            each = rss_by_process(self.pid)
            for pid, seconds in cpu_seconds_by_process(list(each)).items():
                self.cpu[pid] = max(self.cpu.get(pid, 0.0), seconds)
            roles = self.phase_roles.setdefault(self.phase, {})
            for pid, rss in each.items():
                self.peaks[pid] = max(self.peaks.get(pid, 0), rss)
                role = "server" if pid == self.pid else "worker"
                roles[role] = max(roles.get(role, 0), rss)
            split = memory_split(list(each))
            if self.cgroup is not None:
                split["cgroup_anon"] = cgroup_anon(self.cgroup)
            for key, value in split.items():
                self.split_peaks[key] = max(self.split_peaks.get(key, 0), value)
            now = time.monotonic()
            if now - self.last_mark >= 1.0:
                self.last_mark = now
                self.timeline.append(
                    (
                        time.strftime("%H:%M:%S"),
                        sorted((v >> 20 for v in each.values()), reverse=True),
                    )
                )


def memory_split(pids: list[int]) -> dict[str, int]:
    """The processes' summed anonymous (``RssAnon``), file-backed (``RssFile``) and
    proportional (``Pss``: a page shared by both processes counts half in each) bytes."""
    sums = {"anon": 0, "file": 0, "pss": 0}
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(("RssAnon:", "RssFile:", "RssShmem:")):
                    key = "anon" if line.startswith("RssAnon") else "file"
                    sums[key] += int(line.split()[1]) * 1024
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    sums["pss"] += int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            continue
    return sums


def cgroup_anon(path: Path) -> int:
    """Anonymous bytes charged to the memory cgroup (v2 ``anon``, v1 ``total_rss``)."""
    with contextlib.suppress(OSError, ValueError):
        for line in (path / "memory.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key in ("anon", "total_rss"):
                return int(value)
    return 0


def cpu_seconds_by_process(pids: list[int]) -> dict[int, float]:
    """User plus system CPU seconds each process has used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    used: dict[int, float] = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            used[pid] = (int(fields[11]) + int(fields[12])) / ticks
        except (OSError, ValueError, IndexError):
            continue
    return used


def rss_by_process(root: int) -> dict[int, int]:
    """Resident bytes of each Python process under ``root`` (the server and the worker)."""
    found: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            pid = int(entry.name)
            if (
                pid != root
                and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) != root
            ):
                continue
            found[pid] = int((entry / "statm").read_text().split()[1]) * page
        except (OSError, ValueError, IndexError):
            continue
    return found


class Scraper(threading.Thread):
    """Scrapes ``/metrics`` every interval as Prometheus does."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.seconds: list[float] = []
        self.bytes = 0
        self.gzipped = 0
        self.failures = 0
        self.stop = threading.Event()

    def run(self) -> None:
        headers = {"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"}
        with httpx.Client(timeout=10) as client:
            while not self.stop.wait(INTERVAL_SECONDS / 3):
                begun = time.perf_counter()
                try:
                    with client.stream("GET", f"{self.base}/metrics", headers=headers) as r:
                        raw = b"".join(r.iter_raw())
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.seconds.append(time.perf_counter() - begun)
                if not ok:
                    self.failures += 1
                    continue
                self.gzipped = len(raw)
                self.bytes = len(gzip.decompress(raw)) if raw[:2] == b"\x1f\x8b" else len(raw)
                self.stop.wait(INTERVAL_SECONDS * 2 / 3)


def biggest_namespace(api: str) -> str:
    body = httpx.get(f"{api}/apis/metrics.k8s.io/v1beta1/pods", timeout=120).json()
    counts: dict[str, int] = {}
    for item in body["items"]:
        ns = item["metadata"]["namespace"]
        counts[ns] = counts.get(ns, 0) + 1
    return max(counts, key=counts.__getitem__)


def measure_recorder(
    api: str, url: str, folder: Path, args: argparse.Namespace, namespace: str
) -> dict[str, Any]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECORDER_", "KUBE"))}
    if args.buffer == "memory":  # the budget is memory's: no folder takes the overflow
        env["RECORDER_SPOOL_DIR"] = ""
    else:  # as the manifests run it: a folder on the data volume (SQLite) or an emptyDir
        env["RECORDER_SPOOL_DIR"] = str(folder / "spool")
    command = [
        sys.executable, "-m", "recorder", "run", "--api-url", api, "--database-url", url,
        "--interval", f"{INTERVAL_SECONDS}s", "--listen", f"127.0.0.1:{port}",
        "--log-level", "INFO",
    ]  # fmt: skip
    resources = manifest_resources()
    cgroup = Cgroup(
        cpu_cores(args.cpu_limit or resources["limits"]["cpu"]),
        memory_limit_bytes(args.memory_limit or resources["limits"]["memory"]),
    )
    limited = args.cgroup and cgroup.create()
    if limited:
        command = cgroup.wrap(command)
    subprocess.run(  # PostgreSQL is migrated apart (an init container in the manifests)
        [sys.executable, "-m", "recorder", "migrate", "--database-url", url],
        env=env,
        check=True,
        capture_output=True,
    )
    log_path = folder / "recorder.log"
    duration = INTERVAL_SECONDS * (args.polls + args.outage_polls + 2)
    with open(log_path, "wb") as log:
        recorder = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    sampler = Sampler(recorder.pid)
    if limited:
        sampler.cgroup = cgroup.memory_path()
    scraper = Scraper(base)
    try:
        try:
            wait_http(f"{base}/livez", 120)
        except RuntimeError:
            print(log_path.read_text(errors="replace"), file=sys.stderr)
            raise
        sampler.start()
        prober = subprocess.Popen(  # stopped by SIGTERM once the run is over
            [sys.executable, "-m", "bench.scale", "--probe", f"{base}/livez",
             str(duration + OBJECTS_DEADLINE_SECONDS)],
            stdout=subprocess.PIPE,
            env=env,
        )  # fmt: skip
        scraper.start()
        started = time.monotonic()
        sampler.cpu_start = cpu_seconds_by_process(list(rss_by_process(recorder.pid)))
        # The cluster objects' first lists and their first write (150,000 pods, workloads and
        # containers) happen once per start: measured apart, and the steady polls come after.
        objects_stored_s = wait_objects_stored(base)
        steady_from = time.time()
        begun = time.monotonic()
        sampler.phase = "steady"
        time.sleep(INTERVAL_SECONDS * args.polls)  # the steady polls, before query and outage
        sampler.phase = "query"
        query_seconds, query_status, query_bytes = history_query(base, namespace)
        outage_began = time.time()
        sampler.phase = "outage"
        with outage(url):
            time.sleep(INTERVAL_SECONDS * args.outage_polls)
        sampler.phase = "after"  # the write of what waited, then steady polls again
        remaining = duration - (time.monotonic() - begun)
        time.sleep(max(0.0, remaining))
        prober.send_signal(signal.SIGTERM)
        probed = json.loads(prober.communicate(timeout=60)[0])
        scraper.stop.set()
        scraper.join(30)
        sampler.stop.set()
        sampler.join()
        elapsed = time.monotonic() - started
        cpu_used = sum(v - sampler.cpu_start.get(pid, 0.0) for pid, v in sampler.cpu.items())
        recorder.send_signal(signal.SIGTERM)
        code = recorder.wait(60)
        # A rollout: a new recorder on the history the first one wrote (its worker reads back
        # every series and pod's labels before its first write), in the same cgroup.
        restart = restarted(command, env, folder, base, sampler.cgroup, args)
        oom = cgroup.oom_kills() if limited else None
    finally:
        if recorder.poll() is None:
            recorder.kill()
            recorder.wait()
        cgroup.remove()
    text = log_path.read_text(errors="replace")
    if args.keep_logs:
        print(text, file=sys.stderr)
        for at, each in sampler.timeline:
            print(f"rss {at} {each}", file=sys.stderr)
    stored_at = [
        (datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp(), float(m.group(2)))
        for m in _POLL_LINE.finditer(text)
    ]
    polls = [seconds for _, seconds in stored_at]
    skipped = _skipped_or_late(text) + restart["skipped_or_late"]
    livez = sorted(probed["latencies"] + restart["latencies"])
    for phase, peak in restart["sampler"].phase_peaks.items():
        sampler.phase_peaks[phase] = peak
    sampler.phase_roles.update(restart["sampler"].phase_roles)
    for key, value in restart["sampler"].split_peaks.items():
        sampler.split_peaks[key] = max(sampler.split_peaks.get(key, 0), value)
    sampler.peak = max(sampler.peak, restart["sampler"].peak)
    # Steady: the polls that began once the first one's samples were stored (until then a
    # poll also waits for the first write, which creates every series) and the cluster
    # objects' first lists were stored, and ended before the outage.
    steady = [
        seconds
        for at, seconds in stored_at[1:]
        if stored_at and at - seconds >= max(stored_at[0][0], steady_from) and at < outage_began
    ]
    return {
        "first_poll_s": polls[0] if polls else float("nan"),
        "poll_s": statistics.median(steady) if steady else float("nan"),
        "objects_stored_s": objects_stored_s,
        "polls": len(polls),
        "polls_expected": int(elapsed // INTERVAL_SECONDS),
        "polls_skipped_or_late": skipped,
        "livez_p50_ms": 1000 * statistics.median(livez),
        "livez_p99_ms": 1000 * livez[int(0.99 * (len(livez) - 1))],
        "livez_max_ms": 1000 * livez[-1],
        "livez_failures": probed["failures"],
        "peak_rss_mib": sampler.peak / 2**20,
        "peak_rss_mib_by_phase": {
            phase: round(peak / 2**20) for phase, peak in sampler.phase_peaks.items()
        },
        "peak_rss_mib_by_phase_and_process": {
            phase: f"{roles.get('server', 0) >> 20} + {roles.get('worker', 0) >> 20}"
            for phase, roles in sampler.phase_roles.items()
        },
        "peak_rss_mib_each": sorted(
            (round(v / 2**20) for v in sampler.peaks.values()), reverse=True
        ),
        "peak_split_mib": {k: round(v / 2**20) for k, v in sampler.split_peaks.items()},
        "oom_kills": oom,
        "cpu_cores_average": cpu_used / elapsed,
        "scrape_s": statistics.median(scraper.seconds) if scraper.seconds else float("nan"),
        "scrape_max_s": max(scraper.seconds, default=float("nan")),
        "scrape_mb": scraper.bytes / 1e6,
        "scrape_gzip_mb": scraper.gzipped / 1e6,
        "scrape_failures": scraper.failures,
        "query_s": query_seconds,
        "query_status": query_status,
        "query_mb": query_bytes / 1e6,
        "exit_code_after_sigterm": code,
        "restart_first_poll_s": restart["first_poll_s"],
        "restart_peak_rss_mib": restart["sampler"].peak / 2**20,
        "restart_polls": restart["polls"],
        "restart_skipped_or_late": restart["skipped_or_late"],
        "restart_exit_code_after_sigterm": restart["exit_code"],
        "cpu_limit_cores": cgroup.cores if limited else None,
        "memory_limit_mib": cgroup.memory / 2**20 if limited else None,
        "errors_in_log": sum(" ERROR " in line for line in text.splitlines())
        + restart["errors_in_log"],
    }


def _skipped_or_late(log_text: str) -> int:
    """Polls APScheduler skipped (one still running) or ran late, in a recorder's log."""
    markers = ("maximum number of running instances", "was missed by")
    return sum(log_text.count(marker) for marker in markers)


def restarted(
    command: list[str],
    env: dict[str, str],
    folder: Path,
    base: str,
    cgroup: Path | None,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """``command`` started again on the same database for ``--restart-polls`` polls, sampled
    and probed as the first run: phase ``restart``; how long its first poll took."""
    sampler = Sampler(0)
    sampler.phase = "restart"
    sampler.cgroup = cgroup
    result: dict[str, Any] = {
        "sampler": sampler,
        "latencies": [],
        "first_poll_s": None,
        "polls": 0,
        "skipped_or_late": 0,
        "exit_code": None,
        "errors_in_log": 0,
    }
    if not args.restart_polls:
        return result
    log_path = folder / "restart.log"
    with open(log_path, "wb") as log:
        again = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        sampler.pid = again.pid
        sampler.start()
        wait_http(f"{base}/livez", 120)
        scraper = Scraper(base)  # Prometheus keeps scraping
        scraper.start()
        seconds = INTERVAL_SECONDS * (args.restart_polls + 1)
        prober = subprocess.Popen(
            [sys.executable, "-m", "bench.scale", "--probe", f"{base}/livez", str(seconds + 30)],
            stdout=subprocess.PIPE,
            env=env,
        )
        time.sleep(seconds)
        prober.send_signal(signal.SIGTERM)
        result["latencies"] = json.loads(prober.communicate(timeout=60)[0])["latencies"]
        scraper.stop.set()
        scraper.join(30)
        sampler.stop.set()
        sampler.join()
        again.send_signal(signal.SIGTERM)
        result["exit_code"] = again.wait(60)
    finally:
        if again.poll() is None:
            again.kill()
            again.wait()
    text = log_path.read_text(errors="replace")
    polls = [float(m.group(2)) for m in _POLL_LINE.finditer(text)]
    result["first_poll_s"] = polls[0] if polls else float("nan")
    result["polls"] = len(polls)
    result["skipped_or_late"] = _skipped_or_late(text)
    result["errors_in_log"] = sum(" ERROR " in line for line in text.splitlines())
    return result


OBJECTS_DEADLINE_SECONDS = 300.0


def wait_objects_stored(base: str) -> float:
    """Seconds until ``/readyz`` says the cluster objects' first lists are stored ("ok (...)").
    NaN when they never are within the deadline (the run goes on: a slow first write shows as
    slow steady polls)."""
    begun = time.monotonic()
    while time.monotonic() - begun < OBJECTS_DEADLINE_SECONDS:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            checks = httpx.get(f"{base}/readyz", timeout=5).json().get("checks", {})
            if str(checks.get("cluster_objects", "")).startswith("ok ("):
                return time.monotonic() - begun
        time.sleep(0.5)
    return float("nan")


def history_query(base: str, namespace: str) -> tuple[float, int, int]:
    """One large history query: a whole namespace's raw samples of the last minute. (At 150,000
    pods the biggest namespace has 77,744 containers: two minutes, 8 samples each, is more than
    the 500,000 points a response may hold, and the answer is a 400.)"""
    begun = time.perf_counter()
    params = {"resource": "memory", "namespace": namespace, "start": "-1m"}
    response = httpx.get(f"{base}/api/v1/history", params=params, timeout=120)
    return time.perf_counter() - begun, response.status_code, len(response.content)


# --- the run ---------------------------------------------------------------------------------

ROWS = [
    ("steady poll (s)", "poll_s", "{:.2f}"),
    ("floor (s)", "floor_s", "{:.2f}"),
    ("ratio (target <= 1.5)", "ratio", "{:.2f}x"),
    ("first poll, new series (s)", "first_poll_s", "{:.2f}"),
    ("cluster objects' first lists stored after (s)", "objects_stored_s", "{:.1f}"),
    ("/livez p50 (ms)", "livez_p50_ms", "{:.0f}"),
    ("/livez p99 (ms, <= 50)", "livez_p99_ms", "{:.0f}"),
    ("/livez max (ms, <= 250)", "livez_max_ms", "{:.0f}"),
    ("peak RSS, all processes (MiB, <= 512)", "peak_rss_mib", "{:.0f}"),
    ("peak RSS of each process (MiB)", "peak_rss_mib_each", "{}"),
    ("peak RSS by phase (MiB)", "peak_rss_mib_by_phase", "{}"),
    (
        "peak RSS by phase, server + worker (MiB, each at its own peak)",
        "peak_rss_mib_by_phase_and_process",
        "{}",
    ),
    (
        "after a restart on the history: first poll (s), peak RSS (MiB), polls run, skipped or "
        "late, exit code after SIGTERM",
        "restart",
        "{}",
    ),
    (
        "peak anonymous / file-backed / proportional (PSS) memory, cgroup's anonymous (MiB)",
        "peak_split_mib",
        "{}",
    ),
    ("OOM kills in the cgroup", "oom_kills", "{}"),
    ("CPU used, all processes (cores, average)", "cpu_cores_average", "{:.2f}"),
    ("/metrics scrape median / max (s)", "scrape", "{}"),
    ("/metrics size (MB, gzip MB)", "scrape_size", "{}"),
    ("polls run / expected", "polls_run", "{}"),
    ("polls skipped or late", "polls_skipped_or_late", "{}"),
    ("history query (s, status, MB)", "query", "{}"),
    ("ERROR lines in the log", "errors_in_log", "{}"),
    ("exit code after SIGTERM", "exit_code_after_sigterm", "{}"),
]


def derived(result: dict[str, Any]) -> dict[str, Any]:
    result["ratio"] = result["poll_s"] / result["floor_s"]
    result["scrape"] = f"{result['scrape_s']:.2f} / {result['scrape_max_s']:.2f}"
    result["scrape_size"] = f"{result['scrape_mb']:.0f} ({result['scrape_gzip_mb']:.1f})"
    result["polls_run"] = f"{result['polls']} / {result['polls_expected']}"
    result["restart"] = (
        f"{result['restart_first_poll_s']:.1f}, {result['restart_peak_rss_mib']:.0f}, "
        f"{result['restart_polls']}, {result['restart_skipped_or_late']}, "
        f"{result['restart_exit_code_after_sigterm']}"
        if result["restart_first_poll_s"] is not None
        else None
    )
    result["query"] = f"{result['query_s']:.2f}, {result['query_status']}, {result['query_mb']:.1f}"
    return result


MEMORY_TARGET_MIB = 512


def memory_met(result: dict[str, Any]) -> str | None:
    """How the memory target is met (``None``: it is not): the summed resident memory of
    every process within it, or a cgroup limited to it that OOM-killed nothing."""
    if result["oom_kills"]:
        return None
    if result["peak_rss_mib"] <= MEMORY_TARGET_MIB:
        return "summed VmRSS"
    limit = result.get("memory_limit_mib")
    if limit is not None and limit <= MEMORY_TARGET_MIB:
        return f"no OOM kill in a cgroup of {limit:.0f} MiB"
    return None


def met(result: dict[str, Any]) -> bool:
    history = result.get("history")
    return bool(
        result["ratio"] <= 1.5
        and result["livez_p99_ms"] <= 50
        and result["livez_max_ms"] <= 250
        and memory_met(result) is not None
        and result["polls_skipped_or_late"] == 0
        and result.get("restart_exit_code_after_sigterm") in (None, 0)
        and (history is None or all(q["met"] for q in history["queries"]))
    )


def measure_history(kind: str, series: int, repeat: int) -> dict[str, Any]:
    """``bench.history_scale`` on one database: its queries' best times against targets."""
    found = history_scale.measure(kind, series, repeat)
    return {
        "series": series,
        "repeat": repeat,
        "synthesised": "statistics only (pooled records), one container at full resolution",
        "setup_seconds": found["setup_seconds"],
        "queries": [
            {
                "query": target.name,
                "target_seconds": target.target_seconds,
                "seconds": seconds,
                "met": seconds <= target.target_seconds,
            }
            for target, seconds in zip(history_scale.TARGETS, found["seconds"], strict=True)
        ],
    }


def print_history(results: dict[str, dict[str, Any]], kinds: list[str]) -> None:
    first = results[kinds[0]]["history"]
    print(
        f"\n# history at {first['series']:,} series ({first['series'] // 2:,} pods): "
        f"{first['synthesised']}; --since 7d snapped to whole UTC days; best of "
        f"{first['repeat']}"
    )
    print(f"| query | target (s) | {' | '.join(kinds)} |")
    print(f"|---|---|{'---|' * len(kinds)}")
    for index, target in enumerate(history_scale.TARGETS):
        cells = []
        for kind in kinds:
            query = results[kind]["history"]["queries"][index]
            cells.append(f"{query['seconds']:.3f}" + ("" if query["met"] else " (missed)"))
        print(f"| {target.name} | {target.target_seconds:g} | {' | '.join(cells)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5_000)
    parser.add_argument("--pods", type=int, default=150_000)
    parser.add_argument("--polls", type=int, default=6, help="polls measured before the outage")
    parser.add_argument("--outage-polls", type=int, default=3)
    parser.add_argument(
        "--restart-polls",
        type=int,
        default=3,
        help="then a new recorder on the same history, for this many polls (0: none)",
    )
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument(
        "--buffer",
        choices=("spool", "memory"),
        default="spool",
        help="where polls wait during the outage: a spool folder, as the manifests run the "
        "recorder (default), or memory only (RECORDER_SPOOL_DIR empty: the in-memory budget, "
        "RECORDER_BUFFER_MAX_BYTES, fills)",
    )
    parser.add_argument("--cgroup", action="store_true", help="run inside the manifest's limits")
    parser.add_argument("--cpu-limit", help="with --cgroup: instead of the manifest's (e.g. 2)")
    parser.add_argument(
        "--memory-limit", help="with --cgroup: instead of the manifest's (e.g. 1536Mi)"
    )
    parser.add_argument(
        "--history-series",
        type=int,
        default=200_000,
        help="then the history questions at this many series (bench.history_scale; 0: none)",
    )
    parser.add_argument("--history-repeat", type=int, default=2, help="best of this many runs")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep-logs", action="store_true", help="print the recorder's log")
    parser.add_argument("--probe", nargs=2, metavar=("URL", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        probe(args.probe[0], float(args.probe[1]), every=0.1)
        return
    sim_port = free_port()
    api = f"http://127.0.0.1:{sim_port}"
    simulator = subprocess.Popen(
        [sys.executable, "-m", "recorder", "simulate", "--nodes", str(args.nodes), "--pods",
         str(args.pods), "--listen", f"127.0.0.1:{sim_port}",
         "--resolution", f"{RESOLUTION_SECONDS}s", "--log-level", "WARNING",
         # Each node's samples stamped with its own scrape time, as metrics-server's are.
         "--scrape-spread", f"{RESOLUTION_SECONDS - 1}s",
         # The cluster objects too: the recorder lists and watches them as in a real cluster.
         "--core-api"],
    )  # fmt: skip
    results: dict[str, dict[str, Any]] = {}
    try:
        wait_http(f"{api}/apis/metrics.k8s.io", 300)
        namespace = biggest_namespace(api)
        for kind in args.databases.split(","):
            with database(kind) as url:
                floor = measure_floor(api, url, 3)
            with tempfile.TemporaryDirectory() as name, database(kind) as url:
                result = measure_recorder(api, url, Path(name), args, namespace)
            result["floor_s"] = floor["total"]
            result["floor_phases_s"] = floor
            results[kind] = derived(result)
            print(f"{kind}: done", file=sys.stderr)
    finally:
        simulator.terminate()
        simulator.wait(30)
    kinds = list(results)
    if args.history_series:
        for kind in kinds:
            results[kind]["history"] = measure_history(
                kind, args.history_series, args.history_repeat
            )
            print(f"{kind}: history at {args.history_series:,} series done", file=sys.stderr)
    print(
        f"# {args.nodes} nodes, {args.pods} pods, {INTERVAL_SECONDS}s interval, outage buffer: "
        + ("a spool folder" if args.buffer == "spool" else "memory only")
        + (
            f", in a cgroup of {results[kinds[0]]['cpu_limit_cores']} CPU and "
            f"{results[kinds[0]]['memory_limit_mib']:.0f} MiB"
            if args.cgroup and kinds and results[kinds[0]]["cpu_limit_cores"]
            else ""
        )
    )
    print(f"| measure | {' | '.join(kinds)} |")
    print(f"|---|{'---|' * len(kinds)}")
    for title, key, form in ROWS:
        cells = []
        for kind in kinds:
            value = results[kind].get(key)
            cells.append("n/a" if value is None else form.format(value))
        print(f"| {title} | {' | '.join(cells)} |")
    print(
        "| memory target (<= 512 MiB) met by | "
        + " | ".join(memory_met(results[kind]) or "not met" for kind in kinds)
        + " |"
    )
    if args.history_series and kinds:
        print_history(results, kinds)
    verdict = {kind: met(results[kind]) for kind in kinds}
    print(f"targets met: {verdict}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"nodes": args.nodes, "pods": args.pods, "buffer": args.buffer, "results": results},
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
