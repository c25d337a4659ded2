"""Watches as the API server streams them: newline-delimited JSON events over one response.

``?watch=1&resourceVersion=N`` streams every event after N (``ADDED``, ``MODIFIED``,
``DELETED``), bucket by bucket as the model's clock advances; with ``allowWatchBookmarks=true``
a ``BOOKMARK`` follows each bucket (its resourceVersion is that bucket's list's). Without a
resourceVersion, or with ``0``, the stream starts with an ``ADDED`` event per current object.
A resourceVersion older than the history kept gets one ``ERROR`` event holding a 410 ``Expired``
Status, as from the API server, and the stream ends; so does ``timeoutSeconds`` (default 30
minutes). Selectors filter events; a pod that stops (or starts) matching a field selector is
sent as ``DELETED`` (``ADDED``), as the API server does.

Bounded: events are rendered once per bucket and shared; a stream yields one bucket (or 1,000
initial objects) at a time and waits for the client to read it (the server's flow control), and
`WatchLimiter` caps concurrent watches (beyond it, 429).
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

import anyio
import anyio.to_thread
import msgspec

from recorder.simulator.discovery import ApiResource
from recorder.simulator.listing import ListQuery, Snapshot
from recorder.simulator.pods import Event

__all__ = ["DEFAULT_TIMEOUT_SECONDS", "Source", "WatchLimiter", "stream"]

_json = msgspec.json.Encoder(order="deterministic")
DEFAULT_TIMEOUT_SECONDS = 1800.0
_INITIAL_CHUNK = 1000


class Source(Protocol):
    """One resource's objects over time (`pods.PodTimeline`, or static objects)."""

    def list_rv(self, bucket: int) -> int: ...

    def bucket_of(self, resource_version: int) -> int: ...

    def snapshot(self, bucket: int) -> Snapshot: ...

    def events(self, bucket: int) -> list[Event]: ...


class WatchLimiter:
    """At most ``limit`` watches at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        with self._lock:
            if self.active >= self.limit:
                return False
            self.active += 1
            return True

    def release(self) -> None:
        with self._lock:
            self.active -= 1


def _line(event_type: str, resource: ApiResource, item: str) -> str:
    return (
        f'{{"type":"{event_type}","object":{{"kind":"{resource.kind}",'
        f'"apiVersion":"{resource.api_version}",{item[1:]}}}\n'
    )


def too_old(requested: int, oldest: int) -> bytes:
    status = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f"too old resource version: {requested} ({oldest})",
        "reason": "Expired",
        "code": 410,
    }
    return b'{"type":"ERROR","object":' + _json.encode(status) + b"}\n"


def _visible(event: Event, query: ListQuery) -> str | None:
    """The event type this watcher sees, or None."""
    matches = query.matches(event.entry)
    if event.previous_fields is None:
        return event.type if matches else None
    before = query.matches(event.entry._replace(fields=event.previous_fields))
    if before and matches:
        return event.type
    if before:
        return "DELETED"
    return "ADDED" if matches else None


def _bucket_lines(
    events: Sequence[Event], after: int, query: ListQuery, resource: ApiResource
) -> list[str]:
    lines = []
    for event in events:
        if event.resource_version <= after:
            continue
        seen = _visible(event, query)
        if seen is not None:
            lines.append(_line(seen, resource, event.entry.item))
    return lines


def _initial_lines(snapshot: Snapshot, query: ListQuery) -> list[str]:
    resource = query.resource
    return [
        _line("ADDED", resource, entry.item) for entry in snapshot.entries if query.matches(entry)
    ]


def _bookmark(resource: ApiResource, resource_version: int) -> str:
    return _line(
        "BOOKMARK",
        resource,
        f'{{"metadata":{{"resourceVersion":"{resource_version}","creationTimestamp":null}}}}',
    )


async def stream(
    source: Source,
    query: ListQuery,
    *,
    current_bucket: Callable[[], int],
    oldest_bucket: Callable[[], int],
    poll_seconds: float = 0.1,
) -> AsyncIterator[bytes]:
    """The body of a watch response (the caller has validated ``query.resource_version``)."""
    timeout = query.timeout_seconds or DEFAULT_TIMEOUT_SECONDS
    deadline = time.monotonic() + timeout
    resource = query.resource
    if query.resource_version in ("", "0"):
        bucket = current_bucket()
        snapshot: Snapshot = await anyio.to_thread.run_sync(source.snapshot, bucket)
        lines = await anyio.to_thread.run_sync(_initial_lines, snapshot, query)
        for start in range(0, len(lines), _INITIAL_CHUNK):
            yield "".join(lines[start : start + _INITIAL_CHUNK]).encode()
        after = snapshot.resource_version
    else:
        after = int(query.resource_version)
        oldest = oldest_bucket()
        if source.bucket_of(after) < oldest:
            yield too_old(after, source.list_rv(oldest - 1))
            return
    next_bucket = source.bucket_of(after)
    if after >= source.list_rv(next_bucket):  # nothing of that bucket is left to send
        next_bucket += 1
    while time.monotonic() < deadline:
        now = current_bucket()
        while next_bucket <= now:
            events = await anyio.to_thread.run_sync(source.events, next_bucket)
            text = "".join(_bucket_lines(events, after, query, resource))
            rv = source.list_rv(next_bucket)
            if query.bookmarks and rv > after:
                text += _bookmark(resource, rv)
            after = max(after, rv)
            next_bucket += 1
            if text:
                yield text.encode()
        await anyio.sleep(min(poll_seconds, max(0.0, deadline - time.monotonic())))
