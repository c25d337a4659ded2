"""JSON bodies exactly as the Kubernetes API server and metrics-server write them.

Discovery documents and ``Status`` errors are msgspec structs. Metrics items are rendered from
per-object templates: the static part of each object (metadata, labels, container names) is
encoded once with msgspec, so a frame only splices in timestamps and quantities. That keeps a
150,000-pod ``PodMetricsList`` well under a second.

Two flavours: the default matches metrics-server >= 0.5 behind Kubernetes >= 1.20 (labels copied
into metadata, no ``selfLink``, list metadata ``{}``); ``legacy`` matches the fixtures taken from
metrics-server 0.3 (``selfLink`` everywhere, no labels).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import msgspec

from recorder.simulator.model import Frame, NodeSpec, PodInstance

GROUP = "metrics.k8s.io"
VERSIONS = ("v1", "v1beta1")
"""Every version the simulator can serve, most preferred first."""

_json = msgspec.json.Encoder(order="deterministic")


# --- discovery -------------------------------------------------------------------------------


class GroupVersion(msgspec.Struct):
    groupVersion: str
    version: str


class APIGroupEntry(msgspec.Struct):
    name: str
    versions: list[GroupVersion]
    preferredVersion: GroupVersion


class APIGroupList(msgspec.Struct, tag_field="kind", tag="APIGroupList"):
    apiVersion: str
    groups: list[APIGroupEntry]


class APIGroup(msgspec.Struct, tag_field="kind", tag="APIGroup"):
    apiVersion: str
    name: str
    versions: list[GroupVersion]
    preferredVersion: GroupVersion


class APIResource(msgspec.Struct):
    name: str
    singularName: str
    namespaced: bool
    kind: str
    verbs: list[str]


class APIResourceList(msgspec.Struct, tag_field="kind", tag="APIResourceList"):
    apiVersion: str
    groupVersion: str
    resources: list[APIResource]


def _group_entry(versions: Sequence[str]) -> APIGroupEntry:
    gvs = [GroupVersion(f"{GROUP}/{v}", v) for v in versions]
    return APIGroupEntry(GROUP, gvs, gvs[0])


def api_group_list(versions: Sequence[str]) -> bytes:
    """``GET /apis``: only the metrics group is served here (none without ``versions``)."""
    return _json.encode(APIGroupList("v1", [_group_entry(versions)] if versions else []))


def api_group(versions: Sequence[str]) -> bytes:
    """``GET /apis/metrics.k8s.io``."""
    entry = _group_entry(versions)
    return _json.encode(APIGroup("v1", entry.name, entry.versions, entry.preferredVersion))


def api_resource_list(version: str) -> bytes:
    """``GET /apis/metrics.k8s.io/<version>``."""
    verbs = ["get", "list"]
    return _json.encode(
        APIResourceList(
            "v1",
            f"{GROUP}/{version}",
            [
                APIResource("nodes", "", False, "NodeMetrics", verbs),
                APIResource("pods", "", True, "PodMetrics", verbs),
            ],
        )
    )


# --- errors ----------------------------------------------------------------------------------


class StatusDetails(msgspec.Struct, omit_defaults=True):
    name: str = ""
    group: str = ""
    kind: str = ""


class ObjectMeta(msgspec.Struct):
    pass


class Status(msgspec.Struct, tag_field="kind", tag="Status", kw_only=True):
    apiVersion: str = "v1"
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)
    status: str = "Failure"
    message: str
    reason: str
    details: StatusDetails | msgspec.UnsetType = msgspec.UNSET
    code: int


def status(
    code: int, reason: str, message: str, details: StatusDetails | msgspec.UnsetType = msgspec.UNSET
) -> bytes:
    return _json.encode(Status(message=message, reason=reason, details=details, code=code))


def not_found(resource: str, name: str) -> bytes:
    """A missing object: ``resource`` is ``nodes`` or ``pods``."""
    singular = {"nodes": "nodemetrics", "pods": "podmetrics"}[resource]
    return status(
        404,
        "NotFound",
        f'{singular}.{GROUP} "{name}" not found',
        StatusDetails(name=name, group=GROUP, kind=resource),
    )


def path_not_found() -> bytes:
    return status(
        404, "NotFound", "the server could not find the requested resource", StatusDetails()
    )


def method_not_allowed() -> bytes:
    return status(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
        StatusDetails(),
    )


def bad_request(message: str) -> bytes:
    return status(400, "BadRequest", message)


# --- quantities and times --------------------------------------------------------------------


def cpu_quantity(nanocores: int) -> str:
    """Canonical form, as ``resource.Quantity`` prints it: ``12345n``, ``12u``, ``5m``, ``2``."""
    if nanocores == 0:
        return "0"
    for suffix in ("n", "u", "m"):
        if nanocores % 1000:
            return f"{nanocores}{suffix}"
        nanocores //= 1000
    return str(nanocores)


def memory_quantity(kib: int) -> str:
    """Canonical binary form: ``801112Ki``, or ``12Mi`` when it divides evenly."""
    if kib == 0:
        return "0"
    for suffix in ("Ki", "Mi", "Gi"):
        if kib % 1024:
            return f"{kib}{suffix}"
        kib //= 1024
    return f"{kib}Ti"


def go_duration(ms: int) -> str:
    """A Go ``time.Duration`` string for whole milliseconds: ``30s``, ``10.043s``, ``1m5s``."""
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    minutes, ms = divmod(ms, 60_000)
    seconds, millis = divmod(ms, 1000)
    text = f"{seconds}.{millis:03d}".rstrip("0").rstrip(".") + "s"
    if minutes:
        hours, minutes = divmod(minutes, 60)
        text = (f"{hours}h" if hours else "") + f"{minutes}m" + text
    return text


def rfc3339(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _stamps(frame: Frame) -> Callable[[int], str]:
    """Node ``n``'s timestamp text in ``frame`` (each distinct one formatted once)."""
    if not frame.node_offsets:
        text = rfc3339(frame.timestamp)
        return lambda n: text
    offsets = frame.node_offsets
    texts = {o: rfc3339(frame.timestamp - o) for o in set(offsets)}
    return lambda n: texts[offsets[n]]


# --- metrics objects -------------------------------------------------------------------------


_PLAIN = re.compile(r"[-a-zA-Z0-9_./]*")


def _s(value: str) -> str:
    """A JSON string literal, safe inside a %-template."""
    if _PLAIN.fullmatch(value):  # Kubernetes names: nothing to escape
        return f'"{value}"'
    return _json.encode(value).decode().replace("%", "%%")


class Renderer:
    """Renders metrics objects of one API version and flavour.

    Each object gets a %-template taking (creationTimestamp, timestamp, quantities...). The parts
    that never change (namespace, labels, container names, windows) are encoded once and shared;
    a pod's template is rebuilt only when a new pod takes its slot.
    """

    def __init__(self, version: str, *, legacy: bool = False) -> None:
        self.version = version
        self.api_version = f"{GROUP}/{version}"
        self.legacy = legacy
        self._prefix = f"/apis/{GROUP}/{version}"
        self._nodes: dict[int, str] = {}
        self._pods: dict[int, tuple[PodInstance, str]] = {}
        self._windows: dict[int, str] = {}
        self._namespaces: dict[str, str] = {}
        self._labels: dict[int, tuple[Mapping[str, str], str]] = {}
        self._containers: dict[tuple[str, ...], str] = {}

    def list_self_link(self, namespace: str | None, resource: str) -> str:
        if namespace is None:
            return f"{self._prefix}/{resource}"
        return f"{self._prefix}/namespaces/{namespace}/{resource}"

    def _window(self, ms: int) -> str:
        text = self._windows.get(ms)
        if text is None:
            text = self._windows[ms] = go_duration(ms)
        return text

    def _labels_part(self, labels: Mapping[str, str]) -> str:
        """``,"labels":{...}`` (metrics-server copies the object's labels), cached per mapping."""
        if self.legacy or not labels:
            return ""
        cached = self._labels.get(id(labels))
        if cached is None or cached[0] is not labels:
            if len(self._labels) > 100_000:  # rollouts make new mappings; keep it bounded
                self._labels.clear()
            encoded = _json.encode(dict(labels)).decode().replace("%", "%%")
            cached = self._labels[id(labels)] = (labels, f',"labels":{encoded}')
        return cached[1]

    def _node_template(self, node: NodeSpec) -> str:
        template = self._nodes.get(node.index)
        if template is None:
            link = f',"selfLink":{_s(f"{self._prefix}/nodes/{node.name}")}' if self.legacy else ""
            template = (
                f'{{"metadata":{{"name":{_s(node.name)}{link},"creationTimestamp":"%s"'
                f'{self._labels_part(node.labels)}}},"timestamp":"%s",'
                f'"window":"{self._window(node.window_ms)}","usage":{{"cpu":"%s","memory":"%s"}}}}'
            )
            self._nodes[node.index] = template
        return template

    def _pod_template(self, pod: PodInstance, window_ms: int) -> str:
        namespace = self._namespaces.get(pod.namespace)
        if namespace is None:
            namespace = self._namespaces[pod.namespace] = f',"namespace":{_s(pod.namespace)}'
        names = pod.container_names
        containers = self._containers.get(names)
        if containers is None:
            containers = self._containers[names] = ",".join(
                f'{{"name":{_s(name)},"usage":{{"cpu":"%s","memory":"%s"}}}}' for name in names
            )
        link = ""
        if self.legacy:
            link = f',"selfLink":{_s(f"{self._prefix}/namespaces/{pod.namespace}/pods/{pod.name}")}'
        template = (
            f'{{"metadata":{{"name":{_s(pod.name)}{namespace}{link},"creationTimestamp":"%s"'
            f'{self._labels_part(pod.labels)}}},"timestamp":"%s",'
            f'"window":"{self._window(window_ms)}","containers":[{containers}]}}'
        )
        self._pods[pod.slot.number] = (pod, template)
        return template

    def node_items(self, frame: Frame, positions: Iterable[int], created: str) -> list[str]:
        stamp = _stamps(frame)
        nodes, usage = frame.nodes, frame.node_usage
        out = []
        for n in positions:
            cpu, kib = usage[n]
            out.append(
                self._node_template(nodes[n])
                % (created, stamp(n), cpu_quantity(cpu), memory_quantity(kib))
            )
        return out

    def pod_items(self, frame: Frame, positions: Iterable[int], created: str) -> list[str]:
        stamp = _stamps(frame)
        pods, usage, nodes = frame.pods, frame.pod_usage, frame.nodes
        templates = self._pods
        cq, mq = cpu_quantity, memory_quantity
        out = []
        for i in positions:
            pod = pods[i]
            values = usage[i]
            cached = templates.get(pod.slot.number)
            if cached is not None and cached[0] is pod:
                template = cached[1]
            else:
                template = self._pod_template(pod, nodes[pod.node].window_ms)
            ts = stamp(pod.node)
            if len(values) == 2:
                cpu, kib = values
                # Inline the common forms; the helpers handle 0, whole micro/millicores and MiB.
                cpu_text = f"{cpu}n" if cpu % 1000 else cq(cpu)
                memory_text = f"{kib}Ki" if kib % 1024 else mq(kib)
                out.append(template % (created, ts, cpu_text, memory_text))
            else:
                args = [created, ts]
                for k in range(0, len(values), 2):
                    args += (cq(values[k]), mq(values[k + 1]))
                out.append(template % tuple(args))
        return out

    def list_body(self, kind: str, self_link: str, items: list[str]) -> bytes:
        """A ``NodeMetricsList`` or ``PodMetricsList``."""
        meta = f'{{"selfLink":{_s(self_link)}}}' if self.legacy else "{}"
        head = f'{{"kind":"{kind}","apiVersion":"{self.api_version}","metadata":{meta},"items":['
        return "".join((head, ",".join(items), "]}")).encode()

    def object_body(self, kind: str, item: str) -> bytes:
        """A single ``NodeMetrics`` or ``PodMetrics``: the item with kind and apiVersion first."""
        return f'{{"kind":"{kind}","apiVersion":"{self.api_version}",{item[1:]}'.encode()
