"""Typed wire shapes of the Metrics API (``metrics.k8s.io`` v1 and v1beta1 share them).

Every field is optional here on purpose: a missing or null field is reported per item by
``normalize`` with a precise reason instead of failing the whole list. Only values of the wrong
JSON type fail decoding, and ``decode`` then falls back to item-by-item decoding. Fields the
recorder does not use (a list's ``apiVersion``, ``metadata.creationTimestamp``) are left out:
msgspec skips them unchecked, so an odd value there costs nothing.
"""

from __future__ import annotations

import msgspec

NO_LABELS = msgspec.Raw(b"null")


class ObjectMeta(msgspec.Struct, gc=False):
    name: str | None = None
    namespace: str | None = None
    labels: msgspec.Raw = NO_LABELS
    """The labels' JSON text as received (a view of the response's bytes): a pod's labels
    rarely change, so ``normalize`` compares the text with the previous poll's and decodes it
    only when it differs (a dictionary and its strings per pod were about 0.06 s of decoding
    and as much of freeing per poll at 150,000 pods). A text that is not a map of strings
    costs only its pod, with reason ``malformed_item``; a node's are not read."""


class Usage(msgspec.Struct, gc=False):
    """A ``usage`` object: its other resources, if any, are skipped (a struct, not a dict: no
    key strings made per container, about 0.1 s less per poll at 150,000 pods)."""

    cpu: str | msgspec.UnsetType = msgspec.UNSET
    """Absent: ``UNSET``; ``null`` does not decode (as before, when usage was a dict)."""
    memory: str | msgspec.UnsetType = msgspec.UNSET


class ContainerMetrics(msgspec.Struct, gc=False):
    name: str | None = None
    usage: Usage | None = None


class NodeMetrics(msgspec.Struct, gc=False):
    metadata: ObjectMeta | None = None
    timestamp: str | None = None
    window: str | None = None
    usage: Usage | None = None


class PodMetrics(msgspec.Struct, gc=False):
    metadata: ObjectMeta | None = None
    timestamp: str | None = None
    window: str | None = None
    containers: list[ContainerMetrics] | None = None


class NodeMetricsList(msgspec.Struct, gc=False):
    kind: str | None = None
    items: list[NodeMetrics] | None = None


class PodMetricsList(msgspec.Struct, gc=False):
    kind: str | None = None
    items: list[PodMetrics] | None = None


class RawList(msgspec.Struct, gc=False):
    """A list whose items are kept undecoded, for the item-by-item fallback."""

    kind: str | None = None
    items: list[msgspec.Raw] | None = None


class LooseItem(msgspec.Struct):
    """Just enough of a broken item to name it in the rejection report."""

    metadata: ObjectMeta | None = None


class GroupVersionForDiscovery(msgspec.Struct):
    groupVersion: str
    version: str


class APIGroup(msgspec.Struct):
    name: str | None = None
    versions: list[GroupVersionForDiscovery] = msgspec.field(default_factory=list)
    preferredVersion: GroupVersionForDiscovery | None = None


class Status(msgspec.Struct):
    """The API server's error body (``kind: Status``)."""

    kind: str | None = None
    status: str | None = None
    message: str | None = None
    reason: str | None = None
    code: int | None = None
