"""Deployments and ReplicaSets over time, when Deployments roll out (`model` explains when).

At each bucket, a Deployment shows its newest revision (``metadata.generation`` and the
``deployment.kubernetes.io/revision`` annotation = rollouts + 1), and its ReplicaSets are the
newest one with every replica and up to ten older ones scaled to 0 (``revisionHistoryLimit``'s
default); an eleventh older one is deleted. Each change is a watch event.

Resource versions: the changes of Deployment number ``w`` (its index in
`ClusterObjects.workloads`) in bucket ``b`` are ``b*scale + 2*slots + 3 + 4w + j``, after every pod
event of ``b`` (`pods`) and before the list of ``b``: ``j`` is 0 for the ReplicaSet deleted, 1 for
the one scaled to 0, 2 for the new one and 3 for the Deployment. An object that never changed
keeps its static resource version (`objects.STATIC_RESOURCE_VERSION`).
"""

from __future__ import annotations

from recorder.simulator.listing import Entry
from recorder.simulator.objects import (
    STATIC_RESOURCE_VERSION,
    ClusterObjects,
    WorkloadObjects,
    entry,
)
from recorder.simulator.pods import CachedSource, Event, PodTimeline

__all__ = ["HISTORY_LIMIT", "RolloutSource"]

HISTORY_LIMIT = 10
"""Old ReplicaSets kept, as a Deployment's default ``revisionHistoryLimit``."""
_DELETED, _SCALED_DOWN, _CREATED, _DEPLOYMENT = range(4)


class RolloutSource(CachedSource):
    """The ``deployments`` or ``replicasets`` of a model whose Deployments roll out."""

    def __init__(
        self,
        timeline: PodTimeline,
        objects: ClusterObjects,
        plural: str,
    ) -> None:
        super().__init__(timeline.history_buckets)
        self._timeline = timeline
        self._objects = objects
        self._model = model = objects.model
        if plural not in ("deployments", "replicasets"):
            raise ValueError(f"rollouts change deployments and replicasets, not {plural}")
        self._plural = plural
        self._resolution = model.config.resolution_seconds
        self._deployments = [
            (number, w)
            for number, w in enumerate(objects.workloads)
            if w.controller == "Deployment"
        ]
        self._rendered: dict[int, tuple[int, list[tuple[Entry, int]]]] = {}

    def list_rv(self, bucket: int) -> int:
        return self._timeline.list_rv(bucket)

    def bucket_of(self, resource_version: int) -> int:
        return self._timeline.bucket_of(resource_version)

    def _revision(self, w: WorkloadObjects, bucket: int) -> int:
        return self._model.revision(w.workload, bucket * self._resolution)

    def _rv(self, number: int, w: WorkloadObjects, revision: int, change: int) -> int:
        """The resource version of change ``change`` made by the rollout to ``revision``, in
        the first bucket that shows that revision."""
        if not revision:
            return STATIC_RESOURCE_VERSION + number
        instant = self._model.rollout_instant(w.workload, revision)
        b = self._timeline.first_bucket_at_or_after(instant)
        while self._revision(w, b - 1) >= revision:
            b -= 1
        while self._revision(w, b) < revision:
            b += 1
        return self._in_bucket(b, number, change)

    def _in_bucket(self, bucket: int, number: int, change: int) -> int:
        """The resource version of Deployment ``number``'s change ``change`` in ``bucket``."""
        timeline = self._timeline
        return bucket * timeline.scale + timeline.after_pods + 4 * number + change

    def _entries(self, number: int, w: WorkloadObjects, revision: int) -> list[tuple[Entry, int]]:
        """Deployment ``w``'s objects of this plural after ``revision`` rollouts, each with its
        resource version."""
        cached = self._rendered.get(number)
        if cached is not None and cached[0] == revision:
            return cached[1]
        objects = self._objects
        out: list[tuple[Entry, int]] = []
        if self._plural == "deployments":
            rv = self._rv(number, w, revision, _DEPLOYMENT)
            out.append((entry(objects.deployment(w, revision), rv), rv))
        else:
            for r in range(max(0, revision - HISTORY_LIMIT), revision + 1):
                current = r == revision
                rv = (
                    self._rv(number, w, r, _CREATED)
                    if current
                    else self._rv(number, w, r + 1, _SCALED_DOWN)
                )
                out.append((entry(objects.replicaset(w, r, current=current), rv), rv))
        self._rendered[number] = (revision, out)
        return out

    def _entries_at(self, bucket: int) -> list[Entry]:
        entries = [
            e
            for number, w in self._deployments
            for e, _rv in self._entries(number, w, self._revision(w, bucket))
        ]
        entries.sort()
        return entries

    def _compute_events(self, bucket: int) -> list[Event]:
        """What the rollouts that began in ``bucket`` changed, in resource-version order."""
        out: list[Event] = []
        for number, w in self._deployments:
            before, now = self._revision(w, bucket - 1), self._revision(w, bucket)
            if before == now:
                continue
            old = {e.key: e for e, _rv in self._entries(number, w, before)}
            new = self._entries(number, w, now)
            if self._plural == "replicasets":  # the old ones past the history limit
                deleted = self._in_bucket(bucket, number, _DELETED)
                for r in range(max(0, before - HISTORY_LIMIT), max(0, now - HISTORY_LIMIT)):
                    gone = entry(self._objects.replicaset(w, r, current=False), deleted)
                    out.append(Event("DELETED", deleted, gone, None))
            for e, rv in new:
                was = old.get(e.key)
                if was is None:
                    out.append(Event("ADDED", rv, e, None))
                elif was.item != e.item:
                    out.append(Event("MODIFIED", rv, e, was.fields))
        out.sort(key=lambda e: e.resource_version)
        return out
