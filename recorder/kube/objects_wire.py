"""Typed wire shapes of the core-API objects the recorder reads (pods, ReplicaSets, Jobs, nodes,
HorizontalPodAutoscalers), with only the fields it uses: msgspec skips the rest unchecked, so a
pod's 1-2 KB of JSON decodes into a few small structs.

Every field is optional: a missing field means "not set" (a container without limits), never a
failed page. Watch events are decoded in two steps (``WatchEvent`` keeps the object raw), since an
``ERROR`` event holds a ``Status``, not the watched kind.
"""

from __future__ import annotations

import msgspec


class OwnerReference(msgspec.Struct, gc=False):
    kind: str | None = None
    name: str | None = None
    controller: bool | None = None


class ObjectMeta(msgspec.Struct, gc=False):
    name: str | None = None
    namespace: str | None = None
    resourceVersion: str | None = None
    ownerReferences: list[OwnerReference] | None = None


class LabelledMeta(msgspec.Struct, gc=False):
    name: str | None = None
    resourceVersion: str | None = None
    labels: dict[str, str] | None = None


class ResourceRequirements(msgspec.Struct, gc=False):
    requests: dict[str, str] | None = None
    limits: dict[str, str] | None = None


class Container(msgspec.Struct, gc=False):
    name: str | None = None
    resources: ResourceRequirements | None = None


class PodSpec(msgspec.Struct, gc=False):
    nodeName: str | None = None
    containers: list[Container] | None = None


class ContainerStateTerminated(msgspec.Struct, gc=False):
    reason: str | None = None


class ContainerState(msgspec.Struct, gc=False):
    terminated: ContainerStateTerminated | None = None


class ContainerStatus(msgspec.Struct, gc=False):
    name: str | None = None
    restartCount: int | None = None
    lastState: ContainerState | None = None


class PodStatus(msgspec.Struct, gc=False):
    qosClass: str | None = None
    containerStatuses: list[ContainerStatus] | None = None


class Pod(msgspec.Struct, gc=False):
    metadata: ObjectMeta | None = None
    spec: PodSpec | None = None
    status: PodStatus | None = None


class Owned(msgspec.Struct, gc=False):
    """A ReplicaSet or a Job: only who controls it matters."""

    metadata: ObjectMeta | None = None


class NodeStatus(msgspec.Struct, gc=False):
    capacity: dict[str, str] | None = None
    allocatable: dict[str, str] | None = None


class Node(msgspec.Struct, gc=False):
    metadata: LabelledMeta | None = None
    status: NodeStatus | None = None


class CrossVersionObjectReference(msgspec.Struct, gc=False):
    kind: str | None = None
    name: str | None = None


class ResourceMetricSource(msgspec.Struct, gc=False):
    name: str | None = None


class MetricSpec(msgspec.Struct, gc=False):
    type: str | None = None
    resource: ResourceMetricSource | None = None
    containerResource: ResourceMetricSource | None = None


class HpaSpec(msgspec.Struct, gc=False):
    scaleTargetRef: CrossVersionObjectReference | None = None
    metrics: list[MetricSpec] | None = None


class Hpa(msgspec.Struct, gc=False):
    metadata: ObjectMeta | None = None
    spec: HpaSpec | None = None


class ListMeta(msgspec.Struct, gc=False):
    resourceVersion: str | None = None
    continue_: str | None = msgspec.field(default=None, name="continue")


class PodList(msgspec.Struct, gc=False):
    metadata: ListMeta | None = None
    items: list[Pod] | None = None


class OwnedList(msgspec.Struct, gc=False):
    metadata: ListMeta | None = None
    items: list[Owned] | None = None


class NodeList(msgspec.Struct, gc=False):
    metadata: ListMeta | None = None
    items: list[Node] | None = None


class HpaList(msgspec.Struct, gc=False):
    metadata: ListMeta | None = None
    items: list[Hpa] | None = None


class WatchEvent(msgspec.Struct, gc=False):
    type: str | None = None
    object: msgspec.Raw = msgspec.Raw(b"")
    """Empty when missing."""


class Bookmark(msgspec.Struct, gc=False):
    metadata: ListMeta | None = None


class Status(msgspec.Struct, gc=False):
    """An ``ERROR`` event's object."""

    code: int | None = None
    reason: str | None = None
    message: str | None = None
