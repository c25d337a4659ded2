"""List semantics of the API server over a snapshot of objects: selectors, ``limit`` and
``continue``, ``metadata.resourceVersion``, single-object GETs.

A `Snapshot` holds every object of one resource at one resource version, sorted by the API
server's storage key (``<namespace>/<name>``, or ``<name>`` for cluster-scoped objects). A
continue token is the API server's own: URL-safe base64 (no padding) of
``{"v":"meta.k8s.io/v1","rv":<list resourceVersion>,"start":"<last key>\\u0000"}``; the next page
is read from the snapshot at that resource version, so a paginated list is consistent even when
pods churn between pages. `core` decides how old a resourceVersion may be (410 ``Expired``).
"""

from __future__ import annotations

import base64
import binascii
import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import parse_qs

import msgspec

from recorder.selectors import (
    FieldSelector,
    LabelSelector,
    SelectorError,
    parse_field_selector,
    parse_label_selector,
)
from recorder.simulator import wire
from recorder.simulator.discovery import ApiResource

__all__ = [
    "EXPIRED_MESSAGE",
    "Entry",
    "ListError",
    "ListQuery",
    "Snapshot",
    "continue_token",
    "expired",
    "list_page",
    "not_found",
    "object_body",
    "parse_list_query",
]

_json = msgspec.json.Encoder(order="deterministic")
_TOKEN_VERSION = "meta.k8s.io/v1"
EXPIRED_MESSAGE = (
    "The provided continue parameter is too old to display a consistent list result. You can "
    "start a new list without the continue parameter, or use the continue token in this "
    "response to retrieve the remainder of the results. Continuing with the provided token "
    "results in an inconsistent list - objects that were created, modified, or deleted between "
    "the time the first chunk was returned and now may show up in the list."
)


class Entry(NamedTuple):
    """One object: its storage key, identity, labels, field-selector values (in the order of
    `ApiResource.fields`) and JSON (without ``kind`` and ``apiVersion``, as list items are)."""

    key: str
    namespace: str
    name: str
    labels: Mapping[str, str]
    fields: tuple[str, ...]
    item: str


@dataclass(slots=True)
class Snapshot:
    """All objects of a resource at ``resource_version``, sorted by key."""

    resource_version: int
    entries: Sequence[Entry]
    keys: list[str] = field(init=False)
    _index: dict[str, int] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.keys = [e.key for e in self.entries]

    def get(self, key: str) -> Entry | None:
        if not self._index and self.entries:
            self._index = {k: i for i, k in enumerate(self.keys)}
        position = self._index.get(key)
        return None if position is None else self.entries[position]


class ListError(Exception):
    """A request the API server refuses: ``status`` and its ``Status`` body."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def _bad_request(message: str) -> ListError:
    return ListError(400, wire.bad_request(message))


@dataclass(frozen=True, slots=True)
class ListQuery:
    """What a list or watch asks for."""

    resource: ApiResource
    namespace: str | None
    labels: LabelSelector
    fields: FieldSelector
    limit: int = 0
    continue_rv: int | None = None
    continue_start: str = ""
    watch: bool = False
    resource_version: str = ""
    timeout_seconds: float | None = None
    bookmarks: bool = False

    @property
    def selective(self) -> bool:
        return not (self.labels.empty and self.fields.empty)

    def matches(self, entry: Entry) -> bool:
        if self.namespace is not None and entry.namespace != self.namespace:
            return False
        if not self.labels.matches(entry.labels):
            return False
        return self.fields.empty or self.fields.matches(
            dict(zip(self.resource.fields, entry.fields, strict=True))
        )


def _int(params: dict[str, list[str]], name: str) -> int | None:
    text = params.get(name, [""])[0]
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise _bad_request(f"{name}: invalid value {text!r}: must be an integer") from None
    if value < 0:
        raise _bad_request(f"{name}: invalid value {value}: must be non-negative")
    return value


def parse_list_query(resource: ApiResource, namespace: str | None, query: str) -> ListQuery:
    params = parse_qs(query, keep_blank_values=True)
    try:
        labels = parse_label_selector(params.get("labelSelector", [""])[0])
        fields = parse_field_selector(params.get("fieldSelector", [""])[0], resource.fields)
    except SelectorError as exc:
        raise _bad_request(str(exc)) from None
    continue_rv, start = None, ""
    token = params.get("continue", [""])[0]
    if token:
        continue_rv, start = _decode_token(token)
    watch = params.get("watch", [""])[0].lower() in ("1", "true")
    timeout = _int(params, "timeoutSeconds")
    return ListQuery(
        resource=resource,
        namespace=namespace,
        labels=labels,
        fields=fields,
        limit=_int(params, "limit") or 0,
        continue_rv=continue_rv,
        continue_start=start,
        watch=watch,
        resource_version=params.get("resourceVersion", [""])[0],
        timeout_seconds=None if timeout is None else float(timeout),
        bookmarks=params.get("allowWatchBookmarks", [""])[0].lower() in ("1", "true"),
    )


def continue_token(resource_version: int, last_key: str) -> str:
    raw = _json.encode({"v": _TOKEN_VERSION, "rv": resource_version, "start": last_key + "\x00"})
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _decode_token(token: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        decoded = msgspec.json.decode(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise _bad_request("continue key is not valid: illegal base64 or JSON") from None
    if not isinstance(decoded, dict) or decoded.get("v") != _TOKEN_VERSION:
        raise _bad_request("continue key is not valid: incorrect encoded start resourceVersion")
    rv, start = decoded.get("rv"), decoded.get("start")
    if not isinstance(rv, int) or rv <= 0 or not isinstance(start, str) or not start:
        raise _bad_request("continue key is not valid: incorrect encoded start resourceVersion")
    return rv, start


def expired(fresh_token: str) -> ListError:
    """410 for a continue token whose snapshot is gone, offering a token at the current RV."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {"continue": fresh_token},
        "status": "Failure",
        "message": EXPIRED_MESSAGE,
        "reason": "Expired",
        "code": 410,
    }
    return ListError(410, _json.encode(body))


def _range(snapshot: Snapshot, namespace: str | None, start: str) -> tuple[int, int]:
    keys = snapshot.keys
    lo, hi = 0, len(keys)
    if namespace is not None:
        lo = bisect.bisect_left(keys, f"{namespace}/")
        hi = bisect.bisect_left(keys, f"{namespace}0")  # "0" sorts right after "/"
    if start:
        lo = max(lo, bisect.bisect_left(keys, start))
    return lo, hi


def list_page(snapshot: Snapshot, query: ListQuery) -> bytes:
    """One page (or all) of the list, with ``continue`` and ``remainingItemCount`` as due."""
    resource = query.resource
    lo, hi = _range(snapshot, query.namespace, query.continue_start)
    entries = snapshot.entries
    filtered = query.selective
    items: list[str] = []
    limit = query.limit or hi
    i = lo
    last = ""
    while i < hi and len(items) < limit:
        entry = entries[i]
        i += 1
        if filtered and not query.matches(entry):
            continue
        items.append(entry.item)
        last = entry.key
    meta = f'"resourceVersion":"{snapshot.resource_version}"'
    more = any(query.matches(entries[j]) for j in range(i, hi)) if filtered else i < hi
    if more:
        meta += f',"continue":"{continue_token(snapshot.resource_version, last)}"'
        if not filtered:
            meta += f',"remainingItemCount":{hi - i}'
    head = (
        f'{{"kind":"{resource.kind}List","apiVersion":"{resource.api_version}",'
        f'"metadata":{{{meta}}},"items":['
    )
    return "".join((head, ",".join(items), "]}")).encode()


def object_body(resource: ApiResource, entry: Entry) -> bytes:
    """A single object, ``kind`` and ``apiVersion`` first."""
    return (
        f'{{"kind":"{resource.kind}","apiVersion":"{resource.api_version}",{entry.item[1:]}'
    ).encode()


def not_found(resource: ApiResource, name: str) -> ListError:
    subject = f"{resource.plural}.{resource.group}" if resource.group else resource.plural
    details = wire.StatusDetails(name=name, group=resource.group, kind=resource.plural)
    return ListError(404, wire.status(404, "NotFound", f'{subject} "{name}" not found', details))
