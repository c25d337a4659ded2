"""Cluster objects from the core API: who owns each pod, what its containers request, what the
nodes offer and what the autoscalers scale on, kept current by list + watch.

- **Reading.** One `Informer` per resource (and per namespace in namespaced mode): a paginated
  list (``limit=500``, following ``continue``; never one unbounded list, which is 205 MB of JSON
  at 150,000 pods), then a watch from the list's ``resourceVersion`` with bookmarks, watched
  again from the last version it saw when the stream ends; a 410 (too old) relists. Every
  request has a deadline and a size limit (`client.MetricsClient`'s).
- **Memory.** Only what the recorder stores is kept: per pod its node, controller and per
  container requests, limits, restart count and last termination reason, in named tuples whose
  container parts are shared between the pods of one template (`ObjectCache`).
- **Owners.** A pod's top-level workload: Deployment through its ReplicaSet, CronJob through its
  Job, StatefulSet, DaemonSet, Job, another controller as named, or the pod itself (``Pod``)
  when it has none or is a node's mirror pod.
- **Handing over.** `ObjectReader` drains what changed every few seconds (`Changes`) into a
  ``sink`` (the worker's: the store); when the sink fails, the changes wait for the next round.
- **Access.** Without the RBAC (403) or on a server without these APIs (404), it says so once
  in the log, reports it in `ObjectReader.health`, and tries again with backoff; the Metrics API
  poll never depends on it.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgspec

from recorder.errors import (
    DecodeError,
    MalformedResponseError,
    MetricsApiError,
    MetricsApiForbidden,
    MetricsApiNotFound,
    RecorderError,
)
from recorder.kube import objects_wire as wire
from recorder.kube.client import MetricsClient
from recorder.units import cpu_nanocores, memory_bytes, parse_quantity

__all__ = [
    "HPAS",
    "JOBS",
    "NODES",
    "PODS",
    "RBAC_RULE",
    "REPLICASETS",
    "Changes",
    "ContainerSpec",
    "Informer",
    "ObjectCache",
    "ObjectReader",
    "PodWorkload",
    "Resource",
]

log = logging.getLogger(__name__)

PAGE_SIZE = 500
WATCH_SECONDS = 300.0
"""``timeoutSeconds`` asked of each watch: the server ends it then, and it is watched again."""
IDLE_SECONDS = 90.0
"""A watch silent for this long (no event, no bookmark: the API server sends one a minute) is
treated as broken and watched again."""
MAX_OBJECT_BYTES = 4 * 1024 * 1024
"""Largest watch event accepted (etcd's own limit on an object is 1.5 MiB)."""
MAX_PAGE_BYTES = 64 * 1024 * 1024
"""Largest list page accepted (500 pods are about 0.7 MB)."""
FLUSH_SECONDS = 10.0
DRAIN_PODS = 5_000
"""Most changed pods handed to the sink at once. A first list changes every pod: at 150,000
pods handed over at once, their rows (a named tuple per pod and per container) held about
45 MB for the whole first write (15 to 50 s), while the first poll and, at a restart, the
writer's reload ran beside it."""
OWNER_GRACE_SECONDS = 60.0
"""How long a pod whose ReplicaSet or Job is not known yet waits for it before the ReplicaSet
or Job itself is recorded as its workload."""
RETRY_SECONDS = (1.0, 60.0)
"""Backoff after a failure (first, most)."""
DENIED_RETRY_SECONDS = (300.0, 3600.0)
"""Backoff while access is denied or the API is not served (first, most)."""
COMPONENT = "deploy/components/cluster-objects"
RBAC_RULE = (
    'a ClusterRole with verbs [get, list, watch] on apiGroups [""] resources [pods, nodes], '
    "[apps] [replicasets], [batch] [jobs] and [autoscaling] [horizontalpodautoscalers] "
    f"(the kustomize component {COMPONENT}) and a ClusterRoleBinding to it"
)
WELL_KNOWN_LABELS = (
    ("node.kubernetes.io/instance-type", "beta.kubernetes.io/instance-type"),
    ("topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone"),
    ("topology.kubernetes.io/region", "failure-domain.beta.kubernetes.io/region"),
    ("kubernetes.io/arch", "beta.kubernetes.io/arch"),
    ("kubernetes.io/os", "beta.kubernetes.io/os"),
)
_MAX_REASON = 63


@dataclass(frozen=True, slots=True)
class Resource:
    plural: str
    prefix: str
    """``/api/v1`` or ``/apis/<group>/<version>``."""
    namespaced: bool
    list_type: type[Any]
    item_type: type[Any]

    def path(self, namespace: str | None) -> str:
        if namespace is not None:
            return f"{self.prefix}/namespaces/{namespace}/{self.plural}"
        return f"{self.prefix}/{self.plural}"

    def what(self, namespace: str | None) -> str:
        group = self.prefix.removeprefix("/apis/").removeprefix("/api/").split("/")[0]
        name = self.plural if self.prefix.startswith("/api/") else f"{self.plural}.{group}"
        return f"{name} in namespace {namespace}" if namespace else name


PODS = Resource("pods", "/api/v1", True, wire.PodList, wire.Pod)
NODES = Resource("nodes", "/api/v1", False, wire.NodeList, wire.Node)
REPLICASETS = Resource("replicasets", "/apis/apps/v1", True, wire.OwnedList, wire.Owned)
JOBS = Resource("jobs", "/apis/batch/v1", True, wire.OwnedList, wire.Owned)
HPAS = Resource("horizontalpodautoscalers", "/apis/autoscaling/v2", True, wire.HpaList, wire.Hpa)
ORDER = (REPLICASETS, JOBS, NODES, HPAS, PODS)
"""Listed first in this order, so pods find their ReplicaSets and Jobs known."""
_OWNER_KINDS = {"ReplicaSet": REPLICASETS.plural, "Job": JOBS.plural}


# --- records --------------------------------------------------------------------------------


class ContainerRecord(NamedTuple):
    name: str
    cpu_request_nanocores: int | None
    cpu_limit_nanocores: int | None
    memory_request_bytes: int | None
    memory_limit_bytes: int | None
    restart_count: int | None
    last_termination_reason: str | None


class PodRecord(NamedTuple):
    node: str
    owner_kind: str
    """The controller's kind ("" for none)."""
    owner_name: str
    qos_class: str | None
    containers: tuple[ContainerRecord, ...]


class NodeRecord(NamedTuple):
    node: str
    cpu_capacity_nanocores: int | None
    memory_capacity_bytes: int | None
    cpu_allocatable_nanocores: int | None
    memory_allocatable_bytes: int | None
    pods_allocatable: int | None
    instance_type: str | None
    zone: str | None
    region: str | None
    arch: str | None
    os: str | None


class HpaRecord(NamedTuple):
    namespace: str
    name: str
    target_kind: str
    target_name: str
    resources: str
    """Sorted, comma-separated ("cpu,memory"); empty when it scales on other metrics."""


class PodWorkload(NamedTuple):
    namespace: str
    pod: str
    workload_kind: str
    workload_name: str
    qos_class: str | None


class ContainerSpec(NamedTuple):
    namespace: str
    pod: str
    container: str
    cpu_request_nanocores: int | None
    cpu_limit_nanocores: int | None
    memory_request_bytes: int | None
    memory_limit_bytes: int | None
    restart_count: int | None
    last_termination_reason: str | None


@dataclass(slots=True)
class Changes:
    """What changed since the last drain: rows for the store."""

    pods: list[PodWorkload] = field(default_factory=list)
    containers: list[ContainerSpec] = field(default_factory=list)
    nodes: list[NodeRecord] = field(default_factory=list)
    hpas: list[HpaRecord] | None = None
    """The whole current set when it changed, else None."""
    hpa_namespaces: tuple[str, ...] = ()
    """The namespaces ``hpas`` covers (empty: every namespace)."""
    _pending: dict[tuple[str, str], tuple[PodRecord, float]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.pods or self.containers or self.nodes or self.hpas is not None)


# --- decoding -------------------------------------------------------------------------------


def _quantity(values: dict[str, str] | None, name: str, parse: Callable[[str], int]) -> int | None:
    text = (values or {}).get(name)
    if text is None:
        return None
    try:
        return parse(text)
    except (DecodeError, ValueError, ArithmeticError):
        return None  # the API server validates quantities; an odd one is left unset


def _count(text: str) -> int:
    return int(parse_quantity(text))


_INTERNER_SLACK = 1_000


class _Interner:
    """Shares equal strings and container tuples between pods (pods of one template have the
    same containers), so 150,000 pods hold a few thousand container records, not 300,000."""

    def __init__(self) -> None:
        self._containers: dict[tuple[ContainerRecord, ...], tuple[ContainerRecord, ...]] = {}

    def containers(self, value: tuple[ContainerRecord, ...]) -> tuple[ContainerRecord, ...]:
        return self._containers.setdefault(value, value)

    def __len__(self) -> int:
        return len(self._containers)

    def clear(self) -> None:
        self._containers.clear()

    def keep(self, values: Iterable[tuple[ContainerRecord, ...]]) -> None:
        """Hold only ``values`` (the live pods' container tuples, already shared)."""
        self._containers = {value: value for value in values}


def pod_record(pod: wire.Pod, interner: _Interner) -> tuple[tuple[str, str], PodRecord] | None:
    meta = pod.metadata
    if meta is None or not meta.name or not meta.namespace:
        return None
    owner_kind = owner_name = ""
    for ref in meta.ownerReferences or ():
        if ref.controller and ref.kind and ref.name:
            owner_kind, owner_name = sys.intern(ref.kind), sys.intern(ref.name)
            break
    spec = pod.spec or wire.PodSpec()
    status = pod.status or wire.PodStatus()
    statuses = {s.name: s for s in status.containerStatuses or () if s.name}
    containers = []
    for c in spec.containers or ():
        if not c.name:
            continue
        res = c.resources or wire.ResourceRequirements()
        st = statuses.get(c.name)
        reason = None
        if st is not None and st.lastState is not None and st.lastState.terminated is not None:
            reason = (st.lastState.terminated.reason or "")[:_MAX_REASON] or None
        containers.append(
            ContainerRecord(
                sys.intern(c.name),
                _quantity(res.requests, "cpu", cpu_nanocores),
                _quantity(res.limits, "cpu", cpu_nanocores),
                _quantity(res.requests, "memory", memory_bytes),
                _quantity(res.limits, "memory", memory_bytes),
                st.restartCount if st is not None else None,
                sys.intern(reason) if reason else None,
            )
        )
    record = PodRecord(
        sys.intern(spec.nodeName or ""),
        owner_kind,
        owner_name,
        sys.intern(status.qosClass) if status.qosClass else None,
        interner.containers(tuple(containers)),
    )
    return (sys.intern(meta.namespace), meta.name), record


def owned_record(obj: wire.Owned) -> tuple[tuple[str, str], tuple[str, str]] | None:
    meta = obj.metadata
    if meta is None or not meta.name or not meta.namespace:
        return None
    for ref in meta.ownerReferences or ():
        if ref.controller and ref.kind and ref.name:
            return (meta.namespace, meta.name), (ref.kind, ref.name)
    return (meta.namespace, meta.name), ("", "")


def node_record(node: wire.Node) -> tuple[tuple[str, str], NodeRecord] | None:
    meta = node.metadata
    if meta is None or not meta.name:
        return None
    status = node.status or wire.NodeStatus()
    labels = meta.labels or {}
    found = [next((labels[k] for k in keys if k in labels), None) for keys in WELL_KNOWN_LABELS]
    record = NodeRecord(
        meta.name,
        _quantity(status.capacity, "cpu", cpu_nanocores),
        _quantity(status.capacity, "memory", memory_bytes),
        _quantity(status.allocatable, "cpu", cpu_nanocores),
        _quantity(status.allocatable, "memory", memory_bytes),
        _quantity(status.allocatable, "pods", _count),
        *(None if v is None else v[:63] for v in found),
    )
    return ("", meta.name), record


def hpa_record(hpa: wire.Hpa) -> tuple[tuple[str, str], HpaRecord] | None:
    meta = hpa.metadata
    if meta is None or not meta.name or not meta.namespace:
        return None
    spec = hpa.spec or wire.HpaSpec()
    target = spec.scaleTargetRef or wire.CrossVersionObjectReference()
    resources = set()
    for metric in spec.metrics or ():
        source = metric.resource if metric.type == "Resource" else None
        if metric.type == "ContainerResource":
            source = metric.containerResource
        if source is not None and source.name:
            resources.add(source.name)
    record = HpaRecord(
        meta.namespace,
        meta.name,
        target.kind or "",
        target.name or "",
        ",".join(sorted(resources)),
    )
    return (meta.namespace, meta.name), record


# --- the cache --------------------------------------------------------------------------------


class ObjectCache:
    """The objects read so far, and what changed since the last drain. Thread-safe."""

    def __init__(self, *, owner_grace_seconds: float = OWNER_GRACE_SECONDS) -> None:
        self._lock = threading.Lock()
        self._objects: dict[str, dict[tuple[str, str], Any]] = {r.plural: {} for r in ORDER}
        self._interner = _Interner()
        self._pending_pods: dict[tuple[str, str], tuple[PodRecord, float]] = {}
        self._pending_nodes: dict[str, NodeRecord] = {}
        self._hpas_changed = False
        self._grace = owner_grace_seconds
        self.unavailable: set[str] = set()
        """Plurals that cannot be read now (owners of those kinds are not waited for)."""

    def decode(self, resource: Resource, item: Any) -> tuple[tuple[str, str], Any] | None:
        if resource is PODS:
            return pod_record(item, self._interner)
        if resource is NODES:
            return node_record(item)
        if resource is HPAS:
            return hpa_record(item)
        return owned_record(item)

    def pods(self) -> list[tuple[tuple[str, str], PodRecord]]:
        """Every pod kept, sorted by key."""
        with self._lock:
            return sorted(self._objects[PODS.plural].items())

    def count(self, resource: Resource) -> int:
        with self._lock:
            return len(self._objects[resource.plural])

    def get(self, resource: Resource, key: tuple[str, str]) -> Any:
        with self._lock:
            return self._objects[resource.plural].get(key)

    def put(self, resource: Resource, key: tuple[str, str], record: Any, now: float) -> None:
        with self._lock:
            self._put(resource, key, record, now)

    def _put(self, resource: Resource, key: tuple[str, str], record: Any, now: float) -> None:
        objects = self._objects[resource.plural]
        if objects.get(key) == record:
            return
        objects[key] = record
        if resource is PODS:
            self._pending_pods[key] = (record, now)
            # A watch runs for days: each restart count, each pod gone, left its container
            # tuple in the interner until the next full list. Trimmed to the live pods' when
            # it holds twice as many (amortised: once per doubling).
            if len(self._interner) > 2 * len(objects) + _INTERNER_SLACK:
                self._interner.keep(pod.containers for pod in objects.values())
        elif resource is NODES:
            self._pending_nodes[key[1]] = record
        elif resource is HPAS:
            self._hpas_changed = True

    def remove(self, resource: Resource, key: tuple[str, str]) -> None:
        """A deleted object (a pod's pending rows are still written)."""
        with self._lock:
            if self._objects[resource.plural].pop(key, None) is not None and resource is HPAS:
                self._hpas_changed = True

    def replace(
        self,
        resource: Resource,
        namespace: str | None,
        items: Iterable[tuple[tuple[str, str], Any]],
        now: float,
    ) -> None:
        """A list's result: the objects of ``resource`` in ``namespace`` (None: all) become
        ``items``; those not in it are removed."""
        with self._lock:
            seen = set()
            for key, record in items:
                self._put(resource, key, record, now)
                seen.add(key)
            objects = self._objects[resource.plural]
            gone = [
                k for k in objects if k not in seen and (namespace is None or k[0] == namespace)
            ]
            for key in gone:
                del objects[key]
            if gone and resource is HPAS:
                self._hpas_changed = True
            if resource is PODS and namespace is None:
                self._interner.clear()

    def drain(
        self, now: float, hpa_namespaces: Sequence[str] = (), max_pods: int | None = None
    ) -> Changes:
        """What changed: each changed pod whose owner is resolved (or waited long enough),
        at most ``max_pods`` of them (the others wait for the next drain), changed nodes, and
        the autoscalers when they changed."""
        changes = Changes(hpa_namespaces=tuple(hpa_namespaces))
        with self._lock:
            keep: dict[tuple[str, str], tuple[PodRecord, float]] = {}
            pending = iter(self._pending_pods.items())
            for key, (record, seen) in pending:
                if max_pods is not None and len(changes.pods) >= max_pods:
                    keep[key] = (record, seen)
                    keep.update(pending)  # the rest, as they are
                    break
                workload = self._workload(key, record, now - seen >= self._grace)
                if workload is None:
                    keep[key] = (record, seen)
                    continue
                ns, pod = key
                changes._pending[key] = (record, seen)
                changes.pods.append(PodWorkload(ns, pod, *workload, record.qos_class))
                changes.containers.extend(ContainerSpec(ns, pod, *c) for c in record.containers)
            self._pending_pods = keep
            changes.nodes = list(self._pending_nodes.values())
            self._pending_nodes = {}
            if self._hpas_changed:
                changes.hpas = list(self._objects[HPAS.plural].values())
                self._hpas_changed = False
        return changes

    def requeue(self, changes: Changes) -> None:
        """Changes the sink could not take: drained again next time (newer ones win)."""
        with self._lock:
            for key, pending in changes._pending.items():
                self._pending_pods.setdefault(key, pending)
            for node in changes.nodes:
                self._pending_nodes.setdefault(node.node, node)
            if changes.hpas is not None:
                self._hpas_changed = True

    def _workload(
        self, key: tuple[str, str], record: PodRecord, waited: bool
    ) -> tuple[str, str] | None:
        kind, name = record.owner_kind, record.owner_name
        if not kind or kind == "Node":
            return "Pod", key[1]  # a bare pod, or a node's mirror pod
        plural = _OWNER_KINDS.get(kind)
        if plural is None:
            return kind, name  # StatefulSet, DaemonSet, or another controller
        owner = self._objects[plural].get((key[0], name))
        if owner is None:
            return (kind, name) if waited or plural in self.unavailable else None
        top_kind, top_name = owner
        return (top_kind, top_name) if top_kind else (kind, name)


# --- one resource: list, then watch -------------------------------------------------------------


class _Expired(Exception):
    """The resource version is too old (410): list again."""


class Informer:
    """Keeps ``resource`` (in ``namespace``, or all) current in ``cache``: ``sync`` lists it,
    ``watch_once`` applies one watch stream's events, ``run`` loops over both with backoff."""

    def __init__(
        self,
        client: MetricsClient,
        resource: Resource,
        namespace: str | None,
        cache: ObjectCache,
        *,
        page_size: int = PAGE_SIZE,
        watch_seconds: float = WATCH_SECONDS,
        idle_seconds: float = IDLE_SECONDS,
        max_object_bytes: int = MAX_OBJECT_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.resource = resource
        self.namespace = namespace
        self.cache = cache
        self.what = resource.what(namespace)
        self._page_size = page_size
        self._watch_seconds = watch_seconds
        self._idle_seconds = idle_seconds
        self._max_object_bytes = max_object_bytes
        self._clock = clock
        self._list_decoder = msgspec.json.Decoder(resource.list_type)
        self._item_decoder = msgspec.json.Decoder(resource.item_type)
        self._event_decoder = msgspec.json.Decoder(wire.WatchEvent)
        self.resource_version: str | None = None
        self.state = "starting"
        self.error: RecorderError | None = None
        # What it cost, for the README's measurements and the tests.
        self.lists = 0
        self.list_requests = 0
        self.watch_requests = 0
        self.events = 0
        self.bytes_read = 0

    def sync(self) -> str:
        """List every object, page by page; the list's resource version. A continue token
        that expired (410) starts the list again, at most three times."""
        for _attempt in range(3):
            items: list[tuple[tuple[str, str], Any]] = []
            token = ""
            try:
                while True:
                    params = {"limit": str(self._page_size)}
                    if token:
                        params["continue"] = token
                    body = self.client.list_objects(
                        self.resource.path(self.namespace),
                        params,
                        what=self.what,
                        rbac_rule=RBAC_RULE,
                        namespace=self.namespace,
                    )
                    self.list_requests += 1
                    self.bytes_read += len(body)
                    page = self._decode(self._list_decoder, body)
                    del body
                    for item in page.items or ():
                        decoded = self.cache.decode(self.resource, item)
                        if decoded is not None:
                            items.append(decoded)
                    meta = page.metadata or wire.ListMeta()
                    token = meta.continue_ or ""
                    if not token:
                        break
            except MetricsApiError as exc:
                if exc.status == 410 and token:
                    log.debug("the list of %s expired between pages; listing again", self.what)
                    continue
                raise
            self.cache.replace(self.resource, self.namespace, items, self._clock())
            self.lists += 1
            self.resource_version = meta.resourceVersion or ""
            return self.resource_version
        raise MetricsApiError(f"the list of {self.what} kept expiring between pages", status=410)

    def watch_once(self, stop: threading.Event | None = None) -> None:
        """Apply the events of one watch stream from ``resource_version``; raises ``_Expired``
        when the server says the version is too old (410)."""
        assert self.resource_version is not None
        params = {
            "resourceVersion": self.resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(int(self._watch_seconds)),
        }
        self.watch_requests += 1
        with self.client.watch_objects(
            self.resource.path(self.namespace),
            params,
            what=self.what,
            rbac_rule=RBAC_RULE,
            namespace=self.namespace,
            idle_seconds=self._idle_seconds,
            deadline_seconds=self._watch_seconds + self._idle_seconds,
            max_line_bytes=self._max_object_bytes,
        ) as lines:
            for line in lines:
                self.bytes_read += len(line) + 1
                self._apply(self._decode(self._event_decoder, line))
                if stop is not None and stop.is_set():
                    return

    def _apply(self, event: wire.WatchEvent) -> None:
        raw = event.object
        if not raw or bytes(raw) == b"null":
            raise MalformedResponseError(f"a watch event of {self.what} has no object")
        if event.type == "ERROR":
            status = self._decode(msgspec.json.Decoder(wire.Status), raw)
            if status.code == 410:
                raise _Expired(status.message or "410 Gone")
            raise MetricsApiError(
                f"the watch of {self.what} failed: {status.code} {status.reason}: {status.message}",
                status=status.code,
            )
        if event.type == "BOOKMARK":
            bookmark = self._decode(msgspec.json.Decoder(wire.Bookmark), raw)
            version = (bookmark.metadata or wire.ListMeta()).resourceVersion
            if version:
                self.resource_version = version
            return
        item = self._decode(self._item_decoder, raw)
        self.events += 1
        decoded = self.cache.decode(self.resource, item)
        if decoded is not None:
            key, record = decoded
            if event.type == "DELETED":
                self.cache.remove(self.resource, key)
            elif event.type in ("ADDED", "MODIFIED"):
                self.cache.put(self.resource, key, record, self._clock())
        version = item.metadata.resourceVersion if item.metadata is not None else None
        if version:
            self.resource_version = version

    def _decode(self, decoder: msgspec.json.Decoder[Any], body: bytes | msgspec.Raw) -> Any:
        try:
            return decoder.decode(body)
        except msgspec.DecodeError as exc:
            raise MalformedResponseError(
                f"the answer for {self.what} from {self.client.config.server} is not the JSON "
                f"of the API server ({exc})"
            ) from exc

    def run(self, stop: threading.Event, on_state: Callable[[Informer], None]) -> None:
        """List and watch until ``stop``: a 410 relists, another failure waits (backoff) and
        watches again from the last version seen (or lists, when it never listed)."""
        failures = 0
        if self.state in ("denied", "failing"):  # the first list failed: wait before the next
            first, _most = DENIED_RETRY_SECONDS if self.state == "denied" else RETRY_SECONDS
            stop.wait(first)
            failures = 1
        while not stop.is_set():
            try:
                if self.resource_version is None:
                    self.sync()
                    self._set_state("ok", None, on_state)
                    failures = 0
                self.watch_once(stop)
                self._set_state("ok", None, on_state)
                failures = 0
            except _Expired:
                log.debug("the watch of %s is too old (410); listing again", self.what)
                self.resource_version = None
            except RecorderError as exc:
                if stop.is_set():
                    return  # the stop cut the request short: no failure to report
                if isinstance(exc, MetricsApiError) and exc.status == 410:
                    self.resource_version = None
                    continue
                denied = isinstance(exc, MetricsApiForbidden | MetricsApiNotFound)
                if denied:
                    self.resource_version = None
                self._set_state("denied" if denied else "failing", exc, on_state)
                first, most = DENIED_RETRY_SECONDS if denied else RETRY_SECONDS
                stop.wait(min(most, first * 2**failures))
                failures = min(failures + 1, 16)
            except Exception as exc:  # a bug must not end the thread quietly, nor the worker
                if stop.is_set():
                    return
                log.warning("reading %s failed unexpectedly: %r", self.what, exc, exc_info=True)
                stop.wait(RETRY_SECONDS[1])

    def _set_state(
        self, state: str, error: RecorderError | None, on_state: Callable[[Informer], None]
    ) -> None:
        changed = state != self.state
        self.state, self.error = state, error
        if changed:
            on_state(self)


# --- every resource, and the hand-over --------------------------------------------------------


class ObjectReader:
    """Reads the cluster objects in threads of its own and hands what changed to ``sink``.

    ``start()`` returns at once. The first thread lists every resource in `ORDER` (ReplicaSets
    and Jobs before pods), says in one log line what it may not read, then watches each in a
    thread and drains changes into ``sink`` every ``flush_seconds``.
    """

    def __init__(
        self,
        client: MetricsClient,
        sink: Callable[[Changes], object],
        *,
        namespaces: Sequence[str] = (),
        flush_seconds: float = FLUSH_SECONDS,
        owner_grace_seconds: float = OWNER_GRACE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        informer_options: dict[str, Any] | None = None,
    ) -> None:
        self.client = client
        self.cache = ObjectCache(owner_grace_seconds=owner_grace_seconds)
        self._sink = sink
        self._namespaces = tuple(namespaces)
        self._flush_seconds = flush_seconds
        self._clock = clock
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._sink_error: str | None = None
        self.synced = threading.Event()
        """Set once the first list of every resource was tried."""
        self.stored = threading.Event()
        """Set once what the first lists read is in the database (``health`` says "storing"
        until then: at 150,000 pods that first write takes tens of seconds)."""
        scopes: list[str | None] = list(self._namespaces) or [None]
        self.informers = [
            Informer(
                client, resource, namespace, self.cache, clock=clock, **(informer_options or {})
            )
            for resource in ORDER
            if not (self._namespaces and not resource.namespaced)  # namespaced: no nodes
            for namespace in (scopes if resource.namespaced else [None])
        ]

    def start(self) -> None:
        thread = threading.Thread(target=self._run, name="cluster-objects", daemon=True)
        self._threads.append(thread)
        thread.start()

    def stop(self, timeout_seconds: float = 2.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout_seconds
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def health(self) -> str:
        """One line for ``/readyz``'s details."""
        states = [(i.state, i) for i in self.informers]
        denied = [i for s, i in states if s == "denied"]
        failing = [i for s, i in states if s == "failing"]
        parts = []
        if denied:
            names = ", ".join(sorted({i.resource.plural for i in denied}))
            forbidden = any(isinstance(i.error, MetricsApiForbidden) for i in denied)
            why = f"forbidden (apply {COMPONENT})" if forbidden else "not served by the API server"
            parts.append(f"not read: {names}: {why}; metrics are recorded")
        if failing:
            names = ", ".join(sorted({i.resource.plural for i in failing}))
            parts.append(f"failing: {names} (retrying; the log says why)")
        with self._lock:
            if self._sink_error is not None:
                parts.append("not stored: the database fails (the log says why)")
        if not parts:
            if any(s == "starting" for s, _ in states):
                return "starting"
            if not self.stored.is_set():
                return "storing what the first lists read"
            counts = ", ".join(
                f"{self.cache.count(r)} {r.plural}"
                for r in (PODS, NODES, HPAS)
                if any(i.resource is r for i in self.informers)
            )
            return f"ok ({counts})"
        return "; ".join(parts)

    def flush(self) -> int:
        """Hand what changed to the sink now, ``DRAIN_PODS`` pods at a time; on failure what
        was not taken waits for the next round. How many pods were handed over."""
        handed, stored = 0, False
        while changes := self.cache.drain(self._clock(), self._namespaces, DRAIN_PODS):
            try:
                self._sink(changes)
            except RecorderError as exc:
                self.cache.requeue(changes)
                with self._lock:
                    first, self._sink_error = self._sink_error is None, str(exc)
                if first:
                    log.warning("storing cluster objects failed (tried again later): %s", exc)
                raise
            handed, stored = handed + len(changes.pods), True
            del changes  # before the next part is drained
        with self._lock:
            if self._sink_error is not None and stored:
                log.info("cluster objects are stored again")
                self._sink_error = None
        return handed

    # --- threads --------------------------------------------------------------------------

    def _run(self) -> None:
        for informer in self.informers:
            if self._stop.is_set():
                return
            try:
                informer.sync()
                informer.state = "ok"
            except RecorderError as exc:
                denied = isinstance(exc, MetricsApiForbidden | MetricsApiNotFound)
                informer.state, informer.error = ("denied" if denied else "failing"), exc
                if denied:
                    self.cache.unavailable.add(informer.resource.plural)
            except Exception as exc:  # never a traceback on stderr from this thread
                if self._stop.is_set():
                    # A shutdown closes the client once ``stop`` waited long enough: a first
                    # list still in flight (seconds at 150,000 pods) then fails here.
                    return
                log.warning("reading %s failed unexpectedly: %r", informer.what, exc, exc_info=True)
                informer.state = "failing"  # its watch thread lists again
        self._say_denied()
        self.synced.set()
        for informer in self.informers:
            thread = threading.Thread(
                target=informer.run,
                args=(self._stop, self._state_changed),
                name=f"watch-{informer.resource.plural}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()
        while not self._stop.is_set():
            try:
                self.flush()
                self.stored.set()
            except RecorderError:
                pass  # said once by flush; tried again next round
            except Exception as exc:  # a bug: said, and the loop goes on
                log.warning("storing cluster objects failed unexpectedly: %r", exc, exc_info=True)
            self._stop.wait(self._flush_seconds)
        try:
            self.flush()
        except Exception:
            pass  # stopping: what is left is read again at the next start

    def _say_denied(self) -> None:
        denied = [i for i in self.informers if i.state == "denied"]
        failing = [i for i in self.informers if i.state == "failing"]
        if denied:
            forbidden = [i for i in denied if isinstance(i.error, MetricsApiForbidden)]
            names = ", ".join(dict.fromkeys(i.what for i in denied))
            if forbidden:
                log.warning(
                    "cluster objects: may not read %s (403), so workloads, requests and node "
                    "capacity are not recorded (metrics are): %s. Or set "
                    "RECORDER_CLUSTER_OBJECTS=false. Trying again every %.0f-%.0f minutes",
                    names,
                    forbidden[0].error,
                    DENIED_RETRY_SECONDS[0] / 60,
                    DENIED_RETRY_SECONDS[1] / 60,
                )
            else:
                log.warning(
                    "cluster objects: the API server at %s does not serve %s (404), so "
                    "workloads, requests and node capacity are not recorded (metrics are); "
                    "trying again every %.0f-%.0f minutes",
                    self.client.config.server,
                    names,
                    DENIED_RETRY_SECONDS[0] / 60,
                    DENIED_RETRY_SECONDS[1] / 60,
                )
        for informer in failing:
            log.warning(
                "cluster objects: reading %s failed (trying again): %s",
                informer.what,
                informer.error,
            )
        if not denied and not failing:
            log.info(
                "cluster objects: read %s",
                ", ".join(
                    f"{self.cache.count(r)} {r.plural}"
                    for r in ORDER
                    if any(i.resource is r for i in self.informers)
                ),
            )

    def _state_changed(self, informer: Informer) -> None:
        plural = informer.resource.plural
        if informer.state == "denied":
            self.cache.unavailable.add(plural)
            log.debug("cluster objects: %s: %s", informer.what, informer.error)
        elif informer.state == "ok":
            if plural in self.cache.unavailable:
                log.info("cluster objects: %s are read now", informer.what)
            self.cache.unavailable.discard(plural)
        elif informer.state == "failing":
            log.warning(
                "cluster objects: reading %s failed (trying again): %s",
                informer.what,
                informer.error,
            )
