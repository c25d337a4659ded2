"""The Kubernetes objects around the metrics: core (pods, nodes), apps, batch and autoscaling.

Served with the API server's paths, discovery and list semantics, so that kubectl and a
recorder read them as from a cluster: ``/version``, ``/api``, ``/apis``, ``/api/v1/<resource>``,
``/apis/<group>/<version>/[namespaces/<ns>/]<resource>[/<name>]``; ``limit``/``continue``,
``labelSelector``/``fieldSelector`` and ``watch`` (`listing`, `watch`). Pods follow the model's
churn (`pods`); Deployments and ReplicaSets their rollouts when the model has them
(`rollouts`); other controllers, HPAs and nodes are drawn once (`objects`). Node allocatable is
derived from the nodes' usage in the first frame served, rounded up to a plausible machine, so
``kubectl top node`` percentages stay stable.

History: continue tokens and watches may start from any resource version of the last
``history_seconds`` (5 minutes, like the API server's etcd compaction); older ones get 410.
"""

from __future__ import annotations

import math
import threading
from collections.abc import AsyncIterator, Sequence

import msgspec

from recorder.simulator import discovery, wire
from recorder.simulator.discovery import ApiResource
from recorder.simulator.listing import (
    Entry,
    ListError,
    ListQuery,
    Snapshot,
    continue_token,
    expired,
    list_page,
    not_found,
    object_body,
    parse_list_query,
)
from recorder.simulator.model import ClusterModel
from recorder.simulator.objects import ClusterObjects
from recorder.simulator.pods import Event, PodTimeline
from recorder.simulator.replies import BodyCache, Reply
from recorder.simulator.rollouts import RolloutSource
from recorder.simulator.watch import Source, WatchLimiter, stream

__all__ = ["VERSION", "CoreApi"]

_json = msgspec.json.Encoder(order="deterministic")
VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0+recorder-simulator",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-12-11T00:00:00Z",
    "goVersion": "go1.23.4",
    "compiler": "gc",
    "platform": "linux/amd64",
}


class _StaticSource:
    """Objects that do not change: the same entries at every resource version, no events."""

    def __init__(self, timeline: PodTimeline, entries: Sequence[Entry]) -> None:
        self._timeline = timeline
        self._entries = entries
        self._last: Snapshot | None = None

    def list_rv(self, bucket: int) -> int:
        return self._timeline.list_rv(bucket)

    def bucket_of(self, resource_version: int) -> int:
        return self._timeline.bucket_of(resource_version)

    def snapshot(self, bucket: int) -> Snapshot:
        last = self._last
        if last is None or last.resource_version != self.list_rv(bucket):
            last = self._last = Snapshot(self.list_rv(bucket), self._entries)
        return last

    def events(self, bucket: int) -> list[Event]:
        return []


class CoreApi:
    """Routes and renders the object paths. Thread-safe (requests run in worker threads)."""

    def __init__(
        self,
        model: ClusterModel,
        *,
        metrics_versions: Sequence[str] = ("v1beta1",),
        history_seconds: float = 300.0,
        max_watches: int = 100,
    ) -> None:
        self._model = model
        self.objects = ClusterObjects(model)
        self.history_buckets = max(1, math.ceil(history_seconds / model.config.resolution_seconds))
        self.pods = PodTimeline(model, self.objects, self.history_buckets)
        self.watches = WatchLimiter(max_watches)
        self._metrics_versions = tuple(metrics_versions)
        self._sources: dict[str, Source] = {"pods": self.pods}
        self._rollouts = bool(model.config.rollout_every_seconds)
        self._cache = BodyCache(max_entries=32)
        self._lock = threading.Lock()

    def current_bucket(self) -> int:
        return self._model.bucket_of(self._model.now())

    def oldest_bucket(self) -> int:
        return self.current_bucket() - self.history_buckets

    # --- routing -------------------------------------------------------------------------

    def discovery(self, path: str) -> bytes | None:
        parts = [p for p in path.split("/") if p]
        match parts:
            case ["version"]:
                return _json.encode(VERSION)
            case ["api"]:
                return _json.encode(
                    {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
                )
            case ["api", "v1"]:
                return discovery.resource_list("", "v1")
            case ["apis"]:
                return discovery.group_list(self._metrics_versions)
            case ["apis", group]:
                return discovery.group(group)
            case ["apis", group, version]:
                return discovery.resource_list(group, version)
            case _:
                return None

    @staticmethod
    def target(path: str) -> tuple[ApiResource, str | None, str | None] | None:
        """(resource, namespace, name) that a path names, or None."""
        parts = [p for p in path.split("/") if p]
        match parts:
            case ["api", version, *rest]:
                group = ""
            case ["apis", group, version, *rest] if group != wire.GROUP:
                pass
            case _:
                return None
        namespace: str | None = None
        name: str | None = None
        match rest:
            case [plural]:
                pass
            case [plural, name]:
                pass
            case ["namespaces", namespace, plural]:
                pass
            case ["namespaces", namespace, plural, name]:
                pass
            case _:
                return None
        resource = discovery.find(group, version, plural)
        if resource is None or (namespace is not None and not resource.namespaced):
            return None
        return resource, namespace, name

    def handle(self, method: str, path: str, query: str) -> Reply | None:
        """The reply for an object or discovery path (not a watch), or None if not ours."""
        body = self.discovery(path)
        target = self.target(path) if body is None else None
        if body is None and target is None:
            return None
        if method not in ("GET", "HEAD"):
            return Reply(405, wire.method_not_allowed())
        if body is not None:
            return Reply(200, body)
        assert target is not None
        resource, namespace, name = target
        try:
            if name is not None:
                return self._get(resource, namespace, name)
            return self._list(path, parse_list_query(resource, namespace, query), query)
        except ListError as exc:
            return Reply(exc.status, exc.body)

    def _source(self, resource: ApiResource) -> Source:
        with self._lock:
            source = self._sources.get(resource.plural)
            if source is None:
                plural = resource.plural
                if plural in ("deployments", "replicasets") and self._rollouts:
                    source = RolloutSource(self.pods, self.objects, plural)
                else:
                    entries = self.objects.entries(plural, self._model.frame())
                    source = _StaticSource(self.pods, entries)
                self._sources[plural] = source
            return source

    def _get(self, resource: ApiResource, namespace: str | None, name: str) -> Reply:
        snapshot = self._source(resource).snapshot(self.current_bucket())
        entry = snapshot.get(f"{namespace}/{name}" if resource.namespaced else name)
        if entry is None:
            raise not_found(resource, name)
        return Reply(200, object_body(resource, entry))

    def _list(self, path: str, query: ListQuery, raw_query: str) -> Reply:
        source = self._source(query.resource)
        bucket = self.current_bucket()
        if query.continue_rv is not None:
            asked = source.bucket_of(query.continue_rv)
            if asked < bucket - self.history_buckets:
                fresh = continue_token(source.list_rv(bucket), query.continue_start[:-1])
                raise expired(fresh)
            if asked > bucket:
                raise ListError(
                    400, wire.bad_request("continue key is not valid: a future resourceVersion")
                )
            bucket = asked
        snapshot = source.snapshot(bucket)
        key = (snapshot.resource_version, path, raw_query)
        with self._lock:
            reply = self._cache.get(key)
        if reply is None:
            reply = Reply(200, list_page(snapshot, query))
            with self._lock:
                self._cache.put(key, reply)
        return reply

    # --- watch ---------------------------------------------------------------------------

    def open_watch(self, path: str, query: str) -> Reply | AsyncIterator[bytes] | None:
        """A watch's body stream, or the error reply refusing it, or None if not ours."""
        target = self.target(path)
        if target is None:
            return None
        resource, namespace, name = target
        try:
            parsed = parse_list_query(resource, namespace, query)
            if name is not None:
                raise ListError(405, wire.method_not_allowed())
            if parsed.resource_version not in ("", "0"):
                try:
                    valid = int(parsed.resource_version) > 0
                except ValueError:
                    valid = False
                if not valid:
                    message = f"resourceVersion: Invalid value: {parsed.resource_version!r}"
                    raise ListError(400, wire.bad_request(message))
            source = self._source(resource)
        except ListError as exc:
            return Reply(exc.status, exc.body)
        if not self.watches.try_acquire():
            body = wire.status(429, "TooManyRequests", "Too many requests, please try again later.")
            return Reply(429, body)
        return self._guarded(
            stream(
                source,
                parsed,
                current_bucket=self.current_bucket,
                oldest_bucket=self.oldest_bucket,
            )
        )

    async def _guarded(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            self.watches.release()
