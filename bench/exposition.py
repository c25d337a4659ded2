"""/metrics benchmark: rendering the data gauges of a simulated cluster, our renderer against
prometheus-client's generic exposition of the same registry, in one run.

    python -m bench.exposition --pods 150000        # metrics-server's documented maximum
    python -m bench.exposition --pods 10000 --polls 2   # quick look

Each "poll" publishes the next metric resolution of the simulated cluster (same pods, new
values), so the numbers are those of the first scrape after a poll in steady state: every label
string is cached, every value is new. Reported:

- render: the data lines and headers of one format (what the first scrape after a poll pays);
- gzip: compressing them (Prometheus always asks for gzip);
- first scrape: render + gzip in OpenMetrics, what Prometheus requests;
- cached scrape: the next scrape of the same snapshot (compressor state copied, the small tail
  of self-metrics rendered);
- generic: ``prometheus_client.generate_latest`` of the same registry; the bytes must match;
- longest wait of a thread that wants the GIL every millisecond while a first scrape runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from recorder.domain import Kind, Sample
from recorder.exporter import RecorderRegistry, SnapshotHolder, generic_exposition
from recorder.simulator import ClusterModel, SimulatorConfig

START = 1_714_521_600.0
RESOLUTION_SECONDS = 15.0


@dataclass
class Result:
    pods: int
    nodes: int
    containers: int
    exposed_samples: int
    text_bytes: int
    gzip_bytes: int
    cold_first_scrape_seconds: float
    render_seconds: float
    gzip_seconds: float
    first_scrape_seconds: float
    first_scrape_max_seconds: float
    cached_scrape_seconds: float
    generic_seconds: float
    generic_over_render: float
    longest_concurrent_wait_seconds: float


def _timed(call: Callable[[], object]) -> float:
    begun = time.perf_counter()
    call()
    return time.perf_counter() - begun


@contextmanager
def _waits() -> Iterator[list[float]]:
    """A thread that sleeps 1 ms at a time; yields the list its longest wait lands in."""
    longest = [0.0]
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            begun = time.perf_counter()
            time.sleep(0.001)
            longest[0] = max(longest[0], time.perf_counter() - begun)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield longest
    finally:
        stop.set()
        thread.join()


def _publish(holder: SnapshotHolder, samples: tuple[Sample, ...], taken_at_ms: int) -> None:
    holder.publish(Kind.NODE, [s for s in samples if s.key.kind is Kind.NODE], taken_at_ms)
    holder.publish(
        Kind.CONTAINER, [s for s in samples if s.key.kind is Kind.CONTAINER], taken_at_ms
    )


def run(pods: int, nodes: int, polls: int, seed: int) -> Result:
    model = ClusterModel(
        SimulatorConfig(
            nodes=nodes,
            pods=pods,
            seed=seed,
            resolution_seconds=RESOLUTION_SECONDS,
            churn_per_hour=0.05,
            start_time=START,
        ),
        clock=lambda: START,
    )
    frames = [model.samples(START + i * RESOLUTION_SECONDS) for i in range(polls + 1)]
    holder = SnapshotHolder()
    registry = RecorderRegistry(holder, process_collectors=False)

    _publish(holder, frames[0], 0)
    cold = _timed(lambda: registry.exposition(openmetrics=True, gzip=True))

    renders, gzips, firsts, waits = [], [], [], []
    for i, samples in enumerate(frames[1:], start=1):
        _publish(holder, samples, i)
        renders.append(_timed(lambda: registry.exposition(openmetrics=True, gzip=False)))
        gzips.append(_timed(lambda: registry.exposition(openmetrics=True, gzip=True)))
        _publish(holder, samples, i)  # a new generation: render again, as after a poll
        with _waits() as longest:
            firsts.append(_timed(lambda: registry.exposition(openmetrics=True, gzip=True)))
        waits.append(longest[0])
    cached = min(_timed(lambda: registry.exposition(openmetrics=True, gzip=True)) for _ in "abc")

    ours = b"".join(registry.exposition(openmetrics=False, gzip=False))
    generic_begun = time.perf_counter()
    generic = generic_exposition(registry, openmetrics=False)
    generic_seconds = time.perf_counter() - generic_begun
    if generic != ours:
        raise AssertionError("our /metrics differs from prometheus-client's for the same data")
    compressed = b"".join(registry.exposition(openmetrics=False, gzip=True))

    render = statistics.median(renders)
    containers = sum(1 for s in frames[-1] if s.key.kind is Kind.CONTAINER)
    return Result(
        pods=pods,
        nodes=nodes,
        containers=containers,
        exposed_samples=2 * len(frames[-1]),
        text_bytes=len(ours),
        gzip_bytes=len(compressed),
        cold_first_scrape_seconds=cold,
        render_seconds=render,
        gzip_seconds=statistics.median(gzips),
        first_scrape_seconds=statistics.median(firsts),
        first_scrape_max_seconds=max(firsts),
        cached_scrape_seconds=cached,
        generic_seconds=generic_seconds,
        generic_over_render=generic_seconds / render,
        longest_concurrent_wait_seconds=max(waits),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=150_000)
    parser.add_argument("--nodes", type=int, help="default: pods / 30 (at least 1)")
    parser.add_argument("--polls", type=int, default=3, help="polls measured (medians)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.pods, args.nodes or max(1, args.pods // 30), args.polls, args.seed)
    if args.json:
        print(json.dumps(asdict(result), indent=2))
        return
    print(
        f"{result.pods} pods, {result.nodes} nodes, {result.containers} containers: "
        f"{result.exposed_samples} data samples, {result.text_bytes / 1e6:.1f} MB text, "
        f"{result.gzip_bytes / 1e6:.1f} MB gzipped"
    )
    print(
        f"  first scrape after a poll (OpenMetrics + gzip): "
        f"{result.first_scrape_seconds:.3f} s median, {result.first_scrape_max_seconds:.3f} s max"
        f" = render {result.render_seconds:.3f} s + gzip {result.gzip_seconds:.3f} s"
    )
    print(
        "  first scrape ever (after start):               ",
        f"{result.cold_first_scrape_seconds:.3f} s",
    )
    print(
        "  later scrapes of the same snapshot:            ",
        f"{result.cached_scrape_seconds * 1000:.1f} ms",
    )
    print(
        f"  prometheus-client generate_latest, same data:   {result.generic_seconds:.3f} s "
        f"({result.generic_over_render:.1f}x our render; identical bytes)"
    )
    print(
        "  longest wait of a thread wanting the GIL every 1 ms during a first scrape: "
        f"{result.longest_concurrent_wait_seconds * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
