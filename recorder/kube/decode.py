"""Bytes from the Metrics API to typed lists, tolerant of single broken items.

The fast path decodes the whole list into typed structs in one call. When some item cannot be
decoded (a value of the wrong JSON type, a number out of range such as ``1e999``, a string that
is not UTF-8), that call fails; the slow path then decodes item by item, so one bad item becomes
one ``malformed_item`` rejection and the rest of the list survives.

Only a body that cannot be split into items at all raises, and always ``MalformedResponseError``
(reason ``malformed``): not JSON, cut short, nested deeper than the interpreter's recursion
limit (about 1,000 levels; real responses have 6), a lone UTF-16 surrogate escape (msgspec
refuses the whole document; Go never writes one), invalid UTF-8 in the list's own ``kind``, a
top level that is not an object, or an object of another kind. What msgspec does with each of
these is pinned by ``tests/unit/test_kube_decode.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

import msgspec

from recorder.domain import Kind, Rejection
from recorder.errors import MalformedResponseError
from recorder.kube import wire
from recorder.kube.normalize import shown

_node_list = msgspec.json.Decoder(wire.NodeMetricsList)
_node_item = msgspec.json.Decoder(wire.NodeMetrics)
_pod_item = msgspec.json.Decoder(wire.PodMetrics)
ItemT = TypeVar("ItemT", wire.NodeMetrics, wire.PodMetrics)
_raw_list = msgspec.json.Decoder(wire.RawList)
_loose = msgspec.json.Decoder(wire.LooseItem)
_EXPECTED_KIND = {Kind.NODE: "NodeMetricsList", Kind.CONTAINER: "PodMetricsList"}


def decode_node_list(body: bytes) -> tuple[list[wire.NodeMetrics], list[Rejection]]:
    """A NodeMetricsList's items and a rejection per item that cannot be decoded."""
    try:
        whole = _node_list.decode(body)
    except Exception as exc:
        return _after_failure(body, Kind.NODE, _node_item, exc)
    _check_kind(whole.kind, _EXPECTED_KIND[Kind.NODE])
    return list(whole.items or ()), []


def decode_pod_list(body: bytes | list[bytes]) -> tuple[list[wire.PodMetrics], list[Rejection]]:
    """A PodMetricsList's items and a rejection per item that cannot be decoded, all at once
    (the poller iterates ``PodItems`` instead, a slice at a time)."""
    items = PodItems(body)
    return list(items), items.rejections


SLICE_ITEMS = 2_000
"""Pods typed at once by ``PodItems`` from a body split into its items: a few MB of structs,
however large the list."""
PIECE_BYTES = 1 << 17
"""How much of a body in pieces ``PodItems`` types at once, at least: the text on hand is cut
where its last whole item ends, so a part is usually the piece that arrived (the client
inflates up to 1 MiB at a time: about 2,000 pods). At 150,000 pods, typing parts of 4 MiB
(split into their items first) took 0.22 s, parts of 128 KiB typed at once 0.17 s."""
_pod_slice = msgspec.json.Decoder(list[wire.PodMetrics])
_raw_values = msgspec.json.Decoder(list[msgspec.Raw])
_ITEMS_OPEN = b'"items":['
_ITEMS_KEY = b'"items"'
_NEXT_ITEM = b',{"metadata":'
"""Where the next item begins in a compact list (Go writes a pod's metadata first): outside
any string, since a string's own quotes are escaped (``\\"``) and never follow ``{``."""


class PodItems:
    """A PodMetricsList's items, typed a slice at a time as they are iterated.

    Typing 150,000 pods at once holds about 220 MB of structs (labels, usage dicts, names)
    until the last one is normalized; a slice at a time holds a few MB, and what normalizing
    keeps (samples, changed labels) is all that stays. A slice that cannot be typed whole is
    typed item by item: one bad item is one ``malformed_item`` rejection (in ``rejections``,
    complete once iterated), and only a body that cannot be split into items raises
    ``MalformedResponseError``. Iterate once.

    ``body`` is the whole text, or its pieces: a list, or an iterator handing them over as
    they arrive (``MetricsClient.read_pods``), asked for the next only when the items before
    are typed. Whole, it is first split into its items undecoded (``msgspec.Raw``, views of
    the body), so the body must not change meanwhile, and it lives until the last slice. In
    pieces, the list is cut as it arrives, where an item begins (``_NEXT_ITEM``), each part
    typed in one pass and let go of: at 150,000 pods the 64 MB text is never held whole. Each
    part is checked as it is cut (typed whole, or else a run of whole JSON values, typed item
    by item; the envelope before and after the items a whole document of the list's kind),
    so a text that is not split where expected (another writer's key order, whitespace) is
    split further on or, at worst, at its end: the same items as whole. A text that is not
    JSON raises when iteration reaches the broken part, after the items before it.
    """

    def __init__(self, body: bytes | Iterable[bytes]) -> None:
        self.rejections: list[Rejection] = []
        self._position = 0
        self._pieces: Iterator[bytes] | None = None
        self._raw: list[msgspec.Raw] = []
        if isinstance(body, list):
            if len(body) > 1:
                self._pieces = _popped(body[::-1])  # taken from the end, first piece last
                body.clear()  # the caller's list no longer holds them
                return
            body = b"".join(body)
        if not isinstance(body, bytes):
            self._pieces = iter(body)
            return
        raw = self._whole(body)
        self._raw = raw.items or []

    def __iter__(self) -> Iterator[wire.PodMetrics]:
        if self._pieces is None:
            raw, self._raw = self._raw, []  # the body is freed with the last slice
            yield from self._typed(raw)
            return
        for part in self._parts(self._pieces):
            yield from part

    def _typed(self, raw: list[msgspec.Raw]) -> Iterator[wire.PodMetrics]:
        for start in range(0, len(raw), SLICE_ITEMS):
            part = raw[start : start + SLICE_ITEMS]
            try:
                items = _pod_slice.decode(b"".join((b"[", b",".join(part), b"]")))
            except Exception:  # some item of the slice is broken: find it, keep the others
                items = self._one_by_one(part, self._position)
            self._position += len(part)
            yield from items
            del items

    @staticmethod
    def _whole(body: bytes) -> wire.RawList:
        expected = _EXPECTED_KIND[Kind.CONTAINER]
        try:
            raw = _raw_list.decode(body)
        except Exception as exc:
            raise _malformed(expected, exc) from exc
        _check_kind(raw.kind, expected)
        return raw

    def _parts(self, pieces: Iterator[bytes]) -> Iterator[Iterable[wire.PodMetrics]]:
        """The items of a body in pieces, about ``PIECE_BYTES`` of them at a time (see the
        class). A part that splits well is typed in one pass over its text; only one that
        does not type whole is split into its items first, to find where it breaks."""
        text = bytearray()  # grows by appending and shrinks from the front, without copies
        start = -1
        more = True
        while start < 0 and more:
            searched = max(0, len(text) - len(_ITEMS_OPEN))
            more = _append_next(text, pieces)
            start = text.find(_ITEMS_OPEN, searched)
        if start < 0:  # no items at all: the whole text is the list (or not one)
            yield self._typed(self._whole(bytes(text)).items or [])
            return
        head = bytes(text[: start + len(_ITEMS_OPEN)])
        del text[: len(head)]
        try:
            envelope = _raw_list.decode(head + b"]}")
        except Exception:  # "items" is not the list's own, or kind follows: split no further
            envelope = None
        if envelope is None or envelope.items:
            for piece in pieces:
                text += piece
            yield self._typed(self._whole(head + text).items or [])
            return
        _check_kind(envelope.kind, _EXPECTED_KIND[Kind.CONTAINER])
        searched = 0  # text before this holds no item start that splits well
        split = False
        while more:
            while len(text) - searched < PIECE_BYTES and more:
                more = _append_next(text, pieces)
            cut = text.rfind(_NEXT_ITEM, searched)
            if cut <= 0:
                searched = max(0, len(text) - len(_NEXT_ITEM))
                continue
            segment = b"".join((b"[", text[:cut], b"]"))
            try:
                part = _pod_slice.decode(segment)
                self._position += len(part)
            except Exception:  # a broken item, or not whole items: which, the split tells
                try:
                    raw = _raw_values.decode(segment)
                except Exception:  # not whole items (a nested "metadata", or broken): read on
                    searched = cut + 1
                    continue
                part = self._one_by_one(raw, self._position)
                self._position += len(raw)
                del raw
            del segment, text[: cut + 1]
            searched = 0
            split = True
            yield part
            del part
        last = self._whole(head + text).items or []
        if split:  # the last items must be the rest of the same list, and the list's only one
            joined = b",".join(last)
            tail = bytes(text[len(joined) :])
            if (
                not text.startswith(joined)
                or not tail.lstrip().startswith(b"]")
                or (_ITEMS_KEY in tail)
            ):
                raise MalformedResponseError(
                    "the PodMetricsList response names its items more than once (or names "
                    '"items" after them): it does not come from the Kubernetes API'
                )
        yield self._typed(last)

    def _one_by_one(self, part: list[msgspec.Raw], offset: int) -> list[wire.PodMetrics]:
        items: list[wire.PodMetrics] = []
        for position, item in enumerate(part, offset):
            try:
                items.append(_pod_item.decode(item))
            except Exception as exc:  # whatever is wrong with one item costs only that item
                name, namespace = _name_of(item, position)
                self.rejections.append(
                    Rejection(
                        Kind.CONTAINER,
                        name,
                        "malformed_item",
                        _item_problem(exc),
                        namespace=namespace,
                    )
                )
        return items


def _popped(stack: list[bytes]) -> Iterator[bytes]:
    """The pieces of ``stack`` from its end, each let go of by the list as it is handed over."""
    while stack:
        yield stack.pop()


def _append_next(text: bytearray, pieces: Iterator[bytes]) -> bool:
    """``text`` with the next piece appended; False once there is none."""
    piece = next(pieces, None)
    if piece is None:
        return False
    text += piece
    return True


def _after_failure(
    body: bytes, kind: Kind, decoder: msgspec.json.Decoder[ItemT], exc: Exception
) -> tuple[list[ItemT], list[Rejection]]:
    """The fast path failed: a syntax error fails the response; anything else (a wrong type,
    a number out of range, invalid UTF-8, deep nesting) is looked for item by item."""
    if (
        isinstance(exc, msgspec.DecodeError)
        and not isinstance(exc, msgspec.ValidationError)
        and not _bad_utf8(exc)
    ):
        raise _malformed(_EXPECTED_KIND[kind], exc) from exc
    return _decode_item_by_item(body, kind, decoder)


def _bad_utf8(exc: Exception) -> bool:
    """Whether ``exc`` is msgspec refusing a string that is not UTF-8: a UnicodeDecodeError
    before msgspec 0.23, a DecodeError naming UTF-8 since."""
    return isinstance(exc, UnicodeDecodeError) or (
        isinstance(exc, msgspec.DecodeError) and "UTF-8" in str(exc)
    )


def _malformed(expected: str, exc: Exception) -> MalformedResponseError:
    if isinstance(exc, RecursionError):
        detail = (
            f"the {expected} response is nested too deeply to decode ({exc}); a Metrics API "
            "response is a few levels deep: it does not come from the Kubernetes API"
        )
    elif _bad_utf8(exc):
        detail = (
            f"the {expected} response is not valid UTF-8 where it names its kind ({exc}): it "
            "does not come from the Kubernetes API, or a proxy changed it"
        )
    elif isinstance(exc, msgspec.ValidationError):
        detail = f"the {expected} response has an unexpected shape: {exc}"
    else:
        detail = (
            f"the {expected} response is not valid JSON ({exc}): it was cut short or does not "
            "come from the Kubernetes API (a proxy or load balancer answering instead?)"
        )
    return MalformedResponseError(detail)


def _check_kind(kind: str | None, expected: str) -> None:
    if kind is not None and kind != expected:
        raise MalformedResponseError(
            f"expected a {expected} from the Metrics API, got kind {shown(kind)!r}"
        )


def _decode_item_by_item(
    body: bytes, kind: Kind, decoder: msgspec.json.Decoder[ItemT]
) -> tuple[list[ItemT], list[Rejection]]:
    expected = _EXPECTED_KIND[kind]
    try:
        raw = _raw_list.decode(body)
    except Exception as exc:
        raise _malformed(expected, exc) from exc
    _check_kind(raw.kind, expected)
    items: list[ItemT] = []
    rejections: list[Rejection] = []
    for position, item in enumerate(raw.items or ()):
        try:
            items.append(decoder.decode(item))
        except Exception as exc:  # whatever is wrong with one item costs only that item
            name, namespace = _name_of(item, position)
            rejections.append(
                Rejection(kind, name, "malformed_item", _item_problem(exc), namespace=namespace)
            )
    return items, rejections


def _item_problem(exc: Exception) -> str:
    if _bad_utf8(exc):
        return f"the item holds a string that is not valid UTF-8 ({exc})"
    return f"the item cannot be decoded: {exc}"


def _name_of(item: msgspec.Raw, position: int) -> tuple[str, str]:
    try:
        meta = _loose.decode(item).metadata
    except Exception:  # the name itself may be what is broken
        meta = None
    if meta is None or not meta.name:
        return f"items[{position}]", ""
    return shown(meta.name), shown(meta.namespace or "")


def decode_group(body: bytes) -> wire.APIGroup:
    try:
        return msgspec.json.decode(body, type=wire.APIGroup)
    except Exception as exc:
        raise MalformedResponseError(
            f"the metrics.k8s.io discovery document is malformed ({exc}): is the URL a "
            "Kubernetes API server?"
        ) from exc


def decode_status(body: bytes) -> wire.Status | None:
    """The API server's ``kind: Status`` error body, or ``None`` when it is something else."""
    try:
        status = msgspec.json.decode(body, type=wire.Status)
    except Exception:
        return None
    return status if status.kind == "Status" else None
