"""The pod list is handed to the poll as it arrives (``MetricsClient.read_pods``), against real
HTTP servers on loopback: typed while the rest is on its way, a body that breaks on the way read
again whole, the deadline bounding the server and not the consumer."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest

from recorder.errors import MetricsApiTimeout
from recorder.kube.decode import PodItems
from recorder.kube.normalize import normalize_pods
from recorder.kube.retry import RetryPolicy
from tests.integration.test_kube_limits import BODY_HEAD, Connection, answering, client_for, drip
from tests.integration.test_kube_limits import serving as serving_raw

PODS_PATH = "/apis/metrics.k8s.io/v1beta1/pods"
NOW_MS = 1_714_557_600_000  # 2024-05-01T10:00:00Z


def pod_list(count: int) -> bytes:
    """A compact PodMetricsList as Go writes it (metadata first), ``count`` pods, one
    container each: about 230 bytes a pod."""
    items = [
        {
            "metadata": {
                "name": f"web-{i:06d}",
                "namespace": "shop",
                "labels": {"app": "web", "pod-template-hash": "5d8f7c9b6"},
            },
            "timestamp": "2024-05-01T10:00:00Z",
            "window": "15s",
            "containers": [{"name": "app", "usage": {"cpu": f"{i}n", "memory": f"{i}Ki"}}],
        }
        for i in range(count)
    ]
    body = {"kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "items": items}
    return json.dumps(body, separators=(",", ":")).encode()


BODY = pod_list(45_000)  # about 10 MB: more than two of PodItems' 4 MiB parts


def test_pods_are_typed_while_the_rest_of_the_list_is_still_on_its_way() -> None:
    """Figure: the server sends 60 % of a 10 MB list and waits (up to 10 s) until the poll has
    typed a pod; the first pod is typed with the rest unsent, and the list ends whole. A client
    that read the whole body before handing it over would wait the 10 s, its first pod typed
    only once all of it was sent."""
    first_typed = threading.Event()
    typed_before_the_rest: list[bool] = []
    held = int(len(BODY) * 0.6)

    def pods(conn: Connection) -> None:
        conn.head("200 OK", "Content-Type: application/json", f"Content-Length: {len(BODY)}")
        conn.send(BODY[:held])
        typed_before_the_rest.append(first_typed.wait(10))
        conn.send(BODY[held:])

    def consume(pieces: Iterator[bytes]) -> int:
        count = 0
        for _item in PodItems(pieces):
            first_typed.set()
            count += 1
        return count

    with serving_raw(answering(pods)) as server, client_for(server) as client:
        started = time.monotonic()
        typed = client.read_pods(consume)
        elapsed = time.monotonic() - started
    assert typed == 45_000
    assert typed_before_the_rest == [True]
    assert elapsed < 5, elapsed


def test_a_list_that_breaks_on_its_way_is_read_again_and_its_first_part_thrown_away() -> None:
    """Figure: the first answer stops after 60 % of its bytes (the server closes the
    connection); the retry's whole answer is normalized alone: each of its 45,000 pods once,
    none of the broken one's twice."""
    answers: list[int] = []

    def pods(conn: Connection) -> None:
        answers.append(1)
        conn.head("200 OK", "Content-Type: application/json", f"Content-Length: {len(BODY)}")
        conn.send(BODY if len(answers) > 1 else BODY[: int(len(BODY) * 0.6)])

    calls: list[int] = []

    def consume(pieces: Iterator[bytes]) -> tuple[int, int]:
        calls.append(1)
        items = PodItems(pieces)
        batch = normalize_pods(items, now_ms=NOW_MS + 60_000)
        return len(batch.samples), len({key.pod for key in batch.samples.keys})

    retry = RetryPolicy(max_attempts=2, base_delay_seconds=0.01, budget_seconds=10)
    with serving_raw(answering(pods)) as server, client_for(server, retry=retry) as client:
        samples, distinct = client.read_pods(consume)
    assert len(answers) == 2 and len(calls) == 2
    assert samples == distinct == 45_000


def test_the_deadline_bounds_the_server_not_the_time_spent_on_each_piece() -> None:
    """Figure: a 0.5 s request deadline, a consumer spending 0.1 s on each piece it is handed
    (a 0.7 MB list, about a second in all): the list is read whole. Before, the deadline
    counted the consumer's time too, and such a poll timed out against a fast server."""
    body = pod_list(3_000)

    def pods(conn: Connection) -> None:
        conn.head("200 OK", "Content-Type: application/json", f"Content-Length: {len(body)}")
        conn.send(body)

    def slow(pieces: Iterator[bytes]) -> int:
        size = 0
        for piece in pieces:
            size += len(piece)
            time.sleep(0.1)
        return size

    with serving_raw(answering(pods)) as server, client_for(server, deadline_seconds=0.5) as c:
        started = time.monotonic()
        size = c.read_pods(slow)
        elapsed = time.monotonic() - started
    assert size == len(body)
    assert elapsed > 0.5  # the consumer's time alone passed the deadline


def test_a_server_dripping_the_pod_list_still_fails_at_the_deadline() -> None:
    """Figure: one byte a second, a 0.4 s deadline: the pod list, handed over as it arrives,
    fails after 0.4 s as a whole read does."""
    with serving_raw(
        answering(lambda conn: (conn.send(BODY_HEAD), drip(b'{"kind"', 1.0)(conn)))
    ) as server:
        with client_for(server, timeout_seconds=3.0, deadline_seconds=0.4) as client:
            client.discover()
            started = time.monotonic()
            with pytest.raises(MetricsApiTimeout):
                client.read_pods(lambda pieces: sum(map(len, pieces)))
            elapsed = time.monotonic() - started
    assert 0.35 <= elapsed < 0.8
