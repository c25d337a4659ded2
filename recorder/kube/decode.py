"""Bytes from the Metrics API to typed lists, tolerant of single broken items.

The fast path decodes the whole list into typed structs in one call. When some item has a value
of the wrong JSON type, that call fails; the slow path then decodes item by item, so one bad item
becomes one rejection and the rest of the list survives.
"""

from __future__ import annotations

from typing import TypeVar

import msgspec

from recorder.domain import Kind, Rejection
from recorder.errors import MalformedResponseError
from recorder.kube import wire

_node_list = msgspec.json.Decoder(wire.NodeMetricsList)
_pod_list = msgspec.json.Decoder(wire.PodMetricsList)
_node_item = msgspec.json.Decoder(wire.NodeMetrics)
_pod_item = msgspec.json.Decoder(wire.PodMetrics)
ItemT = TypeVar("ItemT", wire.NodeMetrics, wire.PodMetrics)
_raw_list = msgspec.json.Decoder(wire.RawList)
_loose = msgspec.json.Decoder(wire.LooseItem)
_EXPECTED_KIND = {Kind.NODE: "NodeMetricsList", Kind.CONTAINER: "PodMetricsList"}


def decode_node_list(body: bytes) -> tuple[list[wire.NodeMetrics], list[Rejection]]:
    try:
        whole = _node_list.decode(body)
    except msgspec.ValidationError:
        return _decode_item_by_item(body, Kind.NODE, _node_item)
    except msgspec.DecodeError as exc:
        raise MalformedResponseError(_not_json("NodeMetricsList", exc)) from exc
    _check_kind(whole.kind, "NodeMetricsList")
    return list(whole.items or ()), []


def decode_pod_list(body: bytes) -> tuple[list[wire.PodMetrics], list[Rejection]]:
    try:
        whole = _pod_list.decode(body)
    except msgspec.ValidationError:
        return _decode_item_by_item(body, Kind.CONTAINER, _pod_item)
    except msgspec.DecodeError as exc:
        raise MalformedResponseError(_not_json("PodMetricsList", exc)) from exc
    _check_kind(whole.kind, "PodMetricsList")
    return list(whole.items or ()), []


def _not_json(expected: str, exc: Exception) -> str:
    return (
        f"the {expected} response is not valid JSON ({exc}): it was cut short or does not come "
        "from the Kubernetes API (a proxy or load balancer answering instead?)"
    )


def _check_kind(kind: str | None, expected: str) -> None:
    if kind is not None and kind != expected:
        raise MalformedResponseError(
            f"expected a {expected} from the Metrics API, got kind {kind!r}"
        )


def _decode_item_by_item(
    body: bytes, kind: Kind, decoder: msgspec.json.Decoder[ItemT]
) -> tuple[list[ItemT], list[Rejection]]:
    expected = _EXPECTED_KIND[kind]
    try:
        raw = _raw_list.decode(body)
    except msgspec.ValidationError as exc:
        raise MalformedResponseError(
            f"the {expected} response has an unexpected shape: {exc}"
        ) from exc
    _check_kind(raw.kind, expected)
    items: list[ItemT] = []
    rejections: list[Rejection] = []
    for position, item in enumerate(raw.items or ()):
        try:
            items.append(decoder.decode(item))
        except msgspec.ValidationError as exc:
            name, namespace = _name_of(item, position)
            rejections.append(
                Rejection(kind, name, "malformed_item", str(exc), namespace=namespace)
            )
    return items, rejections


def _name_of(item: msgspec.Raw, position: int) -> tuple[str, str]:
    try:
        meta = _loose.decode(item).metadata
    except msgspec.ValidationError:
        meta = None
    if meta is None or meta.name is None:
        return f"items[{position}]", ""
    return meta.name, meta.namespace or ""


def decode_group(body: bytes) -> wire.APIGroup:
    try:
        return msgspec.json.decode(body, type=wire.APIGroup)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise MalformedResponseError(
            f"the metrics.k8s.io discovery document is malformed ({exc}): is the URL a "
            "Kubernetes API server?"
        ) from exc


def decode_status(body: bytes) -> wire.Status | None:
    """The API server's ``kind: Status`` error body, or ``None`` when it is something else."""
    try:
        status = msgspec.json.decode(body, type=wire.Status)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    return status if status.kind == "Status" else None
