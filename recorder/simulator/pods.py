"""Pod objects over time: every slot's pod in a time bucket, and the watch events between
buckets, with resource versions that a fake clock makes reproducible.

A slot always holds one pod (`ClusterModel.occupant`): *Pending* from its start (scheduled,
containers being created) until the first bucket at or after ``running_after``, then *Running*
(exactly the pods of that bucket's metrics `Frame`), until the next occupant replaces it. A pod
that never starts is Pending and unschedulable (no ``spec.nodeName``).

Resource versions: with ``scale`` a power of ten above twice the slot count (and the rollouts'
events, `rollouts`), slot ``s``'s
events in bucket ``b`` are ``b*scale + 2s + 1`` (its pod DELETED) and ``b*scale + 2s + 2`` (the new
pod ADDED, or the pod MODIFIED to Running); a pod's ``metadata.resourceVersion`` is that of its
last event; a list of bucket ``b`` has ``(b+1)*scale - 1``, after every event of ``b`` and before
every later one. So resource versions are integers that only grow with the clock.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Literal, NamedTuple

import msgspec

from recorder.simulator import wire
from recorder.simulator.listing import Entry, Snapshot
from recorder.simulator.model import ClusterModel, PodInstance
from recorder.simulator.objects import ClusterObjects, WorkloadObjects, node_ip, uid
from recorder.simulator.topology import PodSlot

__all__ = ["Event", "PodTimeline"]

_json = msgspec.json.Encoder(order="deterministic")
Phase = Literal["Running", "Pending", "Unschedulable"]
EventType = Literal["ADDED", "MODIFIED", "DELETED"]
_CACHE_LIMIT = 100_000
_T = "\x00"
"""Stands for a pod's start time in cached JSON pieces (msgspec never writes a raw NUL)."""


class Event(NamedTuple):
    type: EventType
    resource_version: int
    entry: Entry
    previous_fields: tuple[str, ...] | None
    """For MODIFIED: the field-selector values before (a phase change can leave a selector)."""


class CachedSource:
    """A `watch.Source` whose snapshots (of the three newest buckets asked for) and events (of
    ``history_buckets`` and two more) are each computed once, by ``_entries_at`` and
    ``_compute_events``, under one lock (so thread-safe)."""

    def __init__(self, history_buckets: int) -> None:
        self.history_buckets = history_buckets
        self._snapshots: OrderedDict[int, Snapshot] = OrderedDict()
        self._events: OrderedDict[int, list[Event]] = OrderedDict()
        self._lock = threading.RLock()

    def list_rv(self, bucket: int) -> int:
        raise NotImplementedError

    def _entries_at(self, bucket: int) -> list[Entry]:
        """Every object in ``bucket``, sorted by key."""
        raise NotImplementedError

    def _compute_events(self, bucket: int) -> list[Event]:
        """What changed from ``bucket - 1`` to ``bucket``, in resource-version order."""
        raise NotImplementedError

    def snapshot(self, bucket: int) -> Snapshot:
        with self._lock:
            snapshot = self._snapshots.get(bucket)
            if snapshot is None:
                snapshot = Snapshot(self.list_rv(bucket), self._entries_at(bucket))
                self._snapshots[bucket] = snapshot
                while len(self._snapshots) > 3:
                    self._snapshots.popitem(last=False)
            return snapshot

    def events(self, bucket: int) -> list[Event]:
        with self._lock:
            events = self._events.get(bucket)
            if events is None:
                events = self._events[bucket] = self._compute_events(bucket)
                while len(self._events) > self.history_buckets + 2:
                    self._events.popitem(last=False)
            return events


class PodTimeline(CachedSource):
    """Every pod's state in each bucket, and the watch events between buckets (`CachedSource`)."""

    def __init__(self, model: ClusterModel, objects: ClusterObjects, history_buckets: int) -> None:
        super().__init__(history_buckets)
        self._model = model
        self._objects = objects
        self._slots = model.slots
        self._resolution = model.config.resolution_seconds
        self.after_pods = 2 * len(self._slots) + 3
        """A bucket's resource versions from here on are its rollouts' (`rollouts`)."""
        last = self.after_pods + 4 * len(objects.workloads)
        self.scale: int = 10 ** max(6, len(str(last + 1)))
        self._instances: list[PodInstance | None] = [None] * len(self._slots)
        self._rendered: list[tuple[int, Phase, Entry] | None] = [None] * len(self._slots)
        self._labels: dict[int, tuple[Mapping[str, str], str]] = {}
        self._pieces: dict[tuple[str, int, Phase], tuple[str, str]] = {}
        self._owners: dict[tuple[str, int] | int, str] = {}

    # --- resource versions ---------------------------------------------------------------

    def list_rv(self, bucket: int) -> int:
        return (bucket + 1) * self.scale - 1

    def bucket_of(self, resource_version: int) -> int:
        return resource_version // self.scale

    def first_bucket_at_or_after(self, t: float) -> int:
        res = self._resolution
        b = math.ceil(t / res)
        while (b - 1) * res >= t:
            b -= 1
        while b * res < t:
            b += 1
        return b

    def _start_bucket(self, pod: PodInstance) -> int:
        if pod.started_at == -math.inf:
            return 0
        slot, model = pod.slot, self._model
        b = self.first_bucket_at_or_after(pod.started_at)
        while model.generation(slot, b - 1) >= pod.generation:
            b -= 1
        while model.generation(slot, b) < pod.generation:
            b += 1
        return b

    # --- states --------------------------------------------------------------------------

    def _pod(self, slot: PodSlot, generation: int) -> PodInstance:
        pod = self._instances[slot.number]
        if pod is None or pod.generation != generation:
            pod = self._instances[slot.number] = self._model.occupant(slot, generation)
        return pod

    def _phase(self, pod: PodInstance, bucket: int) -> Phase:
        if pod.pending:
            return "Unschedulable"
        return "Running" if bucket * self._resolution >= pod.running_after else "Pending"

    def _entry(self, pod: PodInstance, phase: Phase) -> Entry:
        cached = self._rendered[pod.slot.number]
        if cached is not None and cached[0] == pod.generation and cached[1] == phase:
            return cached[2]
        if phase == "Running":
            running = pod.running_after
            changed = 0 if running == -math.inf else self.first_bucket_at_or_after(running)
        else:
            changed = self._start_bucket(pod)
        rv = changed * self.scale + 2 * pod.slot.number + 2
        entry = self._render(pod, phase, rv, None)
        self._rendered[pod.slot.number] = (pod.generation, phase, entry)
        return entry

    def _entries_at(self, bucket: int) -> list[Entry]:
        model = self._model
        entries = []
        for slot in self._slots:
            pod = self._pod(slot, model.generation(slot, bucket))
            entries.append(self._entry(pod, self._phase(pod, bucket)))
        entries.sort()
        return entries

    def _compute_events(self, bucket: int) -> list[Event]:
        model, res, scale = self._model, self._resolution, self.scale
        start, end = (bucket - 1) * res, bucket * res
        out: list[Event] = []
        for slot in self._slots:
            if not slot.lifetime_seconds:
                continue
            before = model.generation(slot, bucket - 1)
            now = model.generation(slot, bucket)
            base = bucket * scale + 2 * slot.number
            if before != now:
                old = self._model.occupant(slot, before)
                gone = self._render(old, self._phase(old, bucket - 1), base + 1, end)
                out.append(Event("DELETED", base + 1, gone, None))
                pod = self._pod(slot, now)
                out.append(
                    Event("ADDED", base + 2, self._entry(pod, self._phase(pod, bucket)), None)
                )
                continue
            pod = self._pod(slot, now)
            if start < pod.running_after <= end:
                previous = self._entry(pod, "Pending").fields
                out.append(Event("MODIFIED", base + 2, self._entry(pod, "Running"), previous))
        return out

    # --- JSON ----------------------------------------------------------------------------

    def _labels_json(self, labels: Mapping[str, str]) -> str:
        cached = self._labels.get(id(labels))
        if cached is None or cached[0] is not labels:
            if len(self._labels) > _CACHE_LIMIT:
                self._labels.clear()
            cached = self._labels[id(labels)] = (labels, _json.encode(dict(labels)).decode())
        return cached[1]

    def _workload_pieces(self, w: WorkloadObjects, phase: Phase) -> tuple[str, str]:
        """(``spec`` up to the node name, ``containerStatuses`` with `_T` for the start)."""
        key = (w.uid, w.revision, phase)
        pieces = self._pieces.get(key)
        if pieces is None:
            if len(self._pieces) > _CACHE_LIMIT:
                self._pieces.clear()
            spec = (
                f'{{"containers":{_json.encode(w.containers).decode()},'
                f'"restartPolicy":"{w.restart_policy}","schedulerName":"default-scheduler"'
            )
            statuses = []
            for c, container in zip(w.resources, w.containers, strict=True):
                status: dict[str, object] = {
                    "name": c.name,
                    "image": container["image"],
                    "ready": phase == "Running",
                    "started": phase == "Running",
                    "restartCount": c.restarts if phase == "Running" else 0,
                    "state": (
                        {"running": {"startedAt": _T}}
                        if phase == "Running"
                        else {"waiting": {"reason": "ContainerCreating"}}
                    ),
                    "lastState": {},
                }
                if phase == "Running" and c.restarts:
                    reason = "OOMKilled" if c.oom_killed else "Error"
                    status["lastState"] = {
                        "terminated": {
                            "exitCode": 137 if c.oom_killed else 1,
                            "reason": reason,
                            "startedAt": _T,
                            "finishedAt": _T,
                        }
                    }
                statuses.append(status)
            text = _json.encode(statuses).decode().replace("\\u0000", _T)
            pieces = self._pieces[key] = (spec, text)
        return pieces

    def _render(self, pod: PodInstance, phase: Phase, rv: int, deleted_at: float | None) -> Entry:
        slot = pod.slot
        w = self._objects.of_pod(pod)
        namespace = slot.workload.namespace
        started = pod.started_at if pod.started_at != -math.inf else w.created
        created = wire.rfc3339(started)
        seed = self._objects.seed
        owner_key = (w.uid, w.revision) if w.owner is not None else pod.node
        owner = self._owners.get(owner_key)
        if owner is None:
            if len(self._owners) > _CACHE_LIMIT:
                self._owners.clear()
            reference = w.owner if w.owner is not None else self._objects.node_owner(pod.node)
            owner = self._owners[owner_key] = _json.encode([reference]).decode()
        meta = (
            f'{{"name":"{pod.name}","namespace":"{namespace}",'
            f'"uid":"{uid(seed, "pod", slot.number, pod.generation)}",'
            f'"resourceVersion":"{rv}","creationTimestamp":"{created}"'
        )
        if deleted_at is not None:
            meta += (
                f',"deletionTimestamp":"{wire.rfc3339(deleted_at)}","deletionGracePeriodSeconds":30'
            )
        labels = self._labels_json(pod.labels)
        meta += f',"labels":{labels},"ownerReferences":{owner}}}'
        spec, statuses = self._workload_pieces(w, phase)
        node = self._model.nodes[pod.node].name
        phase_text = "Running" if phase == "Running" else "Pending"
        if phase == "Unschedulable":
            message = f"0/{len(self._model.nodes)} nodes are available: Insufficient cpu."
            status = (
                '{"phase":"Pending","conditions":[{"type":"PodScheduled","status":"False",'
                f'"reason":"Unschedulable","message":"{message}"}}],"qosClass":"{w.qos_class}"}}'
            )
            node = ""
            body = f'{meta},"spec":{spec}}},"status":{status}}}'
        else:
            ready = "True" if phase == "Running" else "False"
            status = (
                f'{{"phase":"{phase_text}","conditions":[{{"type":"PodScheduled","status":"True"}},'
                f'{{"type":"Ready","status":"{ready}"}}],"hostIP":"{node_ip(pod.node)}",'
                f'"startTime":"{created}","containerStatuses":{statuses.replace(_T, created)},'
                f'"qosClass":"{w.qos_class}"}}'
            )
            body = f'{meta},"spec":{spec},"nodeName":"{node}"}},"status":{status}}}'
        item = '{"metadata":' + body
        return Entry(
            f"{namespace}/{pod.name}",
            namespace,
            pod.name,
            pod.labels,
            (pod.name, namespace, node, phase_text),
            item,
        )
