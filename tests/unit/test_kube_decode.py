"""Decoding Metrics API bodies (recorder/kube/decode.py): one malformed item costs only itself, a
body that cannot be split into items is one MalformedResponseError."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Callable

import msgspec
import pytest

from recorder.domain import Kind, Rejection
from recorder.errors import DecodeError, MalformedResponseError
from recorder.kube import decode, wire
from recorder.kube.decode import PodItems, decode_node_list, decode_pod_list
from tests.kube_support import (
    GOOD_NODE,
    T0,
    assert_only_bad_rejected,
    list_body,
    node,
    nodes_of,
    pod,
    pods_of,
)


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b'{"kind": "NodeMetricsList", "items": 5}', b'{"kind": "Status"}'],
)
def test_unusable_node_list_is_one_clear_error(body: bytes) -> None:
    with pytest.raises(DecodeError, match="NodeMetricsList"):
        decode_node_list(body)


# --- one malformed item costs only itself ----------------------------------------------------


@pytest.mark.parametrize(
    "body_text",
    [
        '"cpu": 1e999, "memory": "1"',  # msgspec: "Number out of range"
        '"cpu": 123456789012345678901234567890, "memory": "1"',
        '"cpu": null, "memory": "1"',
        '"cpu": ["1"], "memory": "1"',
    ],
)
def test_a_number_where_a_quantity_belongs_rejects_its_item_alone(body_text: str) -> None:
    good = json.dumps(node())
    bad = f'{{"metadata": {{"name": "bad"}}, "timestamp": "{T0}", "usage": {{{body_text}}}}}'
    body = f'{{"kind": "NodeMetricsList", "items": [{bad}, {good}]}}'.encode()
    detail = assert_only_bad_rejected(nodes_of(body), "malformed_item")
    assert "usage" in detail


def test_invalid_utf8_in_one_item_rejects_it_alone() -> None:
    good = json.dumps(node()).encode()
    bad = b'{"metadata": {"name": "bad"}, "timestamp": "\xff\xfe", "usage": {}}'
    body = b'{"kind": "NodeMetricsList", "items": [' + bad + b", " + good + b"]}"
    detail = assert_only_bad_rejected(nodes_of(body), "malformed_item")
    assert "not valid UTF-8" in detail


def test_invalid_utf8_in_the_name_itself_is_reported_by_position() -> None:
    good = json.dumps(pod()).encode()
    bad = b'{"metadata": {"name": "b\xc3(", "namespace": "shop"}, "timestamp": "x"}'
    body = b'{"kind": "PodMetricsList", "items": [' + good + b", " + bad + b"]}"
    batch = pods_of(body)
    assert [s.key.pod for s in batch.samples] == ["web-1"]
    assert [(r.name, r.reason) for r in batch.rejections] == [("items[1]", "malformed_item")]


def test_invalid_utf8_outside_the_fields_read_is_ignored_as_msgspec_skips_it() -> None:
    good = json.dumps(node())[1:]
    body = b'{"junk": "\xff", "kind": "NodeMetricsList", "items": [{"x": "\xff", ' + (
        good.encode() + b"]}"
    )
    assert nodes_of(body).samples == (GOOD_NODE,)


def test_items_that_are_not_objects_are_rejected_by_position() -> None:
    body = list_body("NodeMetricsList", None, 5, "node", [], node())
    batch = nodes_of(body)
    assert batch.samples == (GOOD_NODE,)
    assert [(r.name, r.reason) for r in batch.rejections] == [
        (f"items[{i}]", "malformed_item") for i in range(4)
    ]


# --- a body that cannot be split into items fails alone, always as MalformedResponseError -------


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"", "not valid JSON"),
        (b"\xef\xbb\xbf{}", "not valid JSON"),  # a byte-order mark
        (b'{"kind": "NodeMetricsList", "items": [NaN]}', "not valid JSON"),
        (b'{"kind": "NodeMetricsList", "items": []} trailing', "not valid JSON"),
        (b'{"kind": "NodeMetricsList", "items": [{"metadata": {"name": "\\ud800"}}]}', "JSON"),
        (b'{"kind": "NodeMetricsList", "items": [{"x": ' + nested(5000) + b"}]}", "too deeply"),
        (b'{"kind": "NodeMetricsList", "items": ' + nested(5000) + b"}", "too deeply"),
        (b'{"kind": "Node\xffMetricsList", "items": []}', "not valid UTF-8"),
        (b'{"kind": 1e999, "items": []}', "unexpected shape"),
        (b'{"kind": "NodeMetricsList", "items": {"a": 1}}', "unexpected shape"),
        (b"[]", "unexpected shape"),
        (b"null", "unexpected shape"),
        (b'"NodeMetricsList"', "unexpected shape"),
        (b'{"kind": "PodMetricsList", "items": []}', "got kind 'PodMetricsList'"),
        (b'{"kind": "Status", "items": [1]}', "got kind 'Status'"),
        (b'{"kind": "a\\u0000b"}', "got kind 'a\\\\x00b'"),
    ],
)
def test_a_body_that_cannot_be_split_into_items_is_one_malformed_error(
    body: bytes, says: str
) -> None:
    with pytest.raises(MalformedResponseError, match="NodeMetricsList") as caught:
        decode_node_list(body)
    assert says in str(caught.value)
    assert caught.value.reason == "malformed"


def test_nesting_real_responses_never_reach_is_tolerated_where_it_is_ignored() -> None:
    good = json.dumps(node())[1:]
    body = (
        b'{"kind": "NodeMetricsList", "items": [{"x": '
        + nested(500)
        + b", "
        + (good.encode() + b"]}")
    )
    assert nodes_of(body).samples == (GOOD_NODE,)


# --- PodItems: the same answer as decode_pod_list, a slice at a time ---------------------------


def _pods_body(*raw_items: bytes, kind: bytes = b'"PodMetricsList"') -> bytes:
    return b'{"kind": ' + kind + b', "items": [' + b", ".join(raw_items) + b"]}"


GOOD_POD = json.dumps(pod()).encode()
POD_BODIES = [
    _pods_body(),
    _pods_body(GOOD_POD),
    _pods_body(GOOD_POD, b'{"metadata": {"name": "bad"}, "containers": [{"usage": {"cpu": 1}}]}'),
    _pods_body(GOOD_POD, b'{"metadata": {"name": "b\xc3(", "namespace": "shop"}}', GOOD_POD),
    _pods_body(b"null", b"5", b'"pod"', b"[]", GOOD_POD),
    _pods_body(b'{"x": ' + nested(500) + b"}", GOOD_POD),
    _pods_body(GOOD_POD, b'{"metadata": {"name": "\\ud800"}}'),  # a lone surrogate escape
    _pods_body(GOOD_POD, kind=b'"NodeMetricsList"'),
    _pods_body(GOOD_POD, kind=b"1e999"),
    b'{"kind": "PodMetricsList", "items": [NaN]}',
    b'{"kind": "PodMetricsList", "items": {"a": 1}}',
    b"not json",
    b"",
]


def _outcome(
    decode: Callable[[bytes], tuple[list[wire.PodMetrics], list[Rejection]]], body: bytes
) -> object:
    try:
        return decode(body)
    except MalformedResponseError as exc:
        return ("malformed", str(exc))


def _by_slices(body: bytes) -> tuple[list[wire.PodMetrics], list[Rejection]]:
    items = PodItems(body)
    return list(items), items.rejections


def _whole_list(body: bytes) -> tuple[list[wire.PodMetrics], list[Rejection]]:
    """The reference: the whole list typed in one call, item by item where that fails (as
    ``decode_node_list`` still does)."""
    try:
        whole = msgspec.json.decode(body, type=wire.PodMetricsList)
    except Exception as exc:
        if (
            isinstance(exc, msgspec.DecodeError)
            and not isinstance(exc, msgspec.ValidationError)
            and not decode._bad_utf8(exc)  # msgspec 0.23 and later: a DecodeError
        ):
            raise MalformedResponseError(f"not valid JSON ({exc})") from exc
    else:
        if whole.kind not in (None, "PodMetricsList"):
            raise MalformedResponseError(f"got kind {whole.kind!r}")
        return list(whole.items or ()), []
    return decode._decode_item_by_item(body, Kind.CONTAINER, msgspec.json.Decoder(wire.PodMetrics))


@pytest.mark.parametrize("body", POD_BODIES)
def test_pod_items_answer_as_the_whole_list_decode(body: bytes) -> None:
    sliced, whole = _outcome(_by_slices, body), _outcome(_whole_list, body)
    if isinstance(whole, tuple) and whole and whole[0] == "malformed":
        assert isinstance(sliced, tuple) and sliced[0] == "malformed"  # the words may differ
    else:
        assert sliced == whole
    assert _outcome(decode_pod_list, body) == sliced


def test_pod_items_find_bad_items_in_any_slice_and_keep_every_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(decode, "SLICE_ITEMS", 3)
    named = [json.dumps(pod(f"web-{i}")).encode() for i in range(10)]
    named[4] = b'{"metadata": {"name": "bad-4", "namespace": "shop"}, "window": 30}'
    named[9] = b"17"
    body = _pods_body(*named)
    items, rejections = _by_slices(body)
    assert [p.metadata.name for p in items if p.metadata] == [
        f"web-{i}" for i in range(10) if i not in (4, 9)
    ]
    assert [(r.name, r.namespace) for r in rejections] == [("bad-4", "shop"), ("items[9]", "")]
    assert (items, rejections) == decode_pod_list(body)


def test_pod_items_are_iterated_once_and_let_go_of_the_body() -> None:
    items = PodItems(_pods_body(GOOD_POD, GOOD_POD))
    assert len(list(items)) == 2
    assert list(items) == []  # the undecoded items (views of the body) are gone


# --- PodItems over a body in pieces: the same answer, a few MB at a time ------------------------


def _compact(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _compact_pods(*raw_items: bytes, kind: bytes = b'"PodMetricsList"') -> bytes:
    """A list as Go (metrics-server) writes it: compact, kind and metadata before the items."""
    head = b'{"kind":' + kind + b',"apiVersion":"metrics.k8s.io/v1beta1","metadata":{},"items":['
    return head + b",".join(raw_items) + b"]}"


COMPACT_PODS = [_compact(pod(f"web-{i}")) for i in range(12)]
NESTED_METADATA = _compact(  # a container whose first key is "metadata": not an item start
    {**pod("odd"), "containers": [{"metadata": {"name": "x"}, "name": "c", "usage": {}}] * 2}
)
PIECES_BODIES = [
    *POD_BODIES,
    _compact_pods(),
    _compact_pods(*COMPACT_PODS),
    _compact_pods(
        *COMPACT_PODS[:5],
        b'{"metadata":{"name":"bad","namespace":"shop"},"window":3}',
        *COMPACT_PODS[5:],
    ),
    _compact_pods(*COMPACT_PODS[:3], b"17", b'{"metadata":{"name":"b\xc3("}}', *COMPACT_PODS[3:]),
    _compact_pods(*COMPACT_PODS[:4], NESTED_METADATA, NESTED_METADATA, *COMPACT_PODS[4:]),
    _compact_pods(*COMPACT_PODS, kind=b'"NodeMetricsList"'),
    # the kind after the items: checked at the end
    b'{"items":[' + b",".join(COMPACT_PODS) + b'],"kind":"NodeMetricsList"}',
    b'{"items":[' + b",".join(COMPACT_PODS) + b'],"kind":"PodMetricsList"}',
    # broken in the middle, or cut short: the items before it are typed, then it raises
    _compact_pods(*COMPACT_PODS[:6], b'{"metadata":{"name":"x"},,}', *COMPACT_PODS[6:]),
    _compact_pods(*COMPACT_PODS)[:-40],
    # "items" of something else first, or twice
    b'{"metadata":{"items":[1]},"kind":"PodMetricsList","items":['
    + b",".join(COMPACT_PODS)
    + b"]}",
]


def _in_pieces(body: bytes, size: int) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)]


@pytest.mark.parametrize("piece_size", [1, 7, 100, 10_000])
@pytest.mark.parametrize("body", PIECES_BODIES)
def test_pod_items_in_pieces_answer_as_the_whole_list_decode(
    body: bytes, piece_size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(decode, "PIECE_BYTES", 300)  # a few items per part
    monkeypatch.setattr(decode, "SLICE_ITEMS", 2)

    def in_pieces(body: bytes) -> tuple[list[wire.PodMetrics], list[Rejection]]:
        items = PodItems(_in_pieces(body, piece_size))
        return list(items), items.rejections

    whole, split = _outcome(_whole_list, body), _outcome(in_pieces, body)
    if isinstance(whole, tuple) and whole and whole[0] == "malformed":
        assert isinstance(split, tuple) and split[0] == "malformed"
    else:
        assert split == whole


def test_pod_items_in_pieces_refuse_a_list_naming_its_items_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Read whole, the last "items" counts (msgspec); in pieces the first one's items may be
    typed already, so such a list (Go never writes one) is refused, not half read."""
    monkeypatch.setattr(decode, "PIECE_BYTES", 300)
    body = _compact_pods(*COMPACT_PODS[:2])[:-1] + b',"items":[' + COMPACT_PODS[3] + b"]}"
    with pytest.raises(MalformedResponseError, match="more than once"):
        list(PodItems(_in_pieces(body, 50)))


def test_pod_items_in_pieces_type_the_items_before_a_broken_part_then_raise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(decode, "PIECE_BYTES", 300)
    body = _compact_pods(*COMPACT_PODS[:6], b'{"metadata":{"name":"x"},,}', *COMPACT_PODS[6:])
    items = iter(PodItems(_in_pieces(body, 50)))
    first = next(items).metadata
    assert first is not None and first.name == "web-0"
    with pytest.raises(MalformedResponseError, match="PodMetricsList"):
        list(items)


def test_pod_items_in_pieces_let_go_of_each_piece_once_typed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Halfway through a 3.5 MB list in 64 KB pieces, less than two thirds of it is still held
    (read whole, all of it lives until the last item is typed)."""
    monkeypatch.setattr(decode, "PIECE_BYTES", 64 << 10)  # a part's typed pods: ~200 of them
    names = [f"web-{i:05d}-" + "x" * 40 for i in range(12_000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        pieces = _in_pieces(
            _compact_pods(*(_compact(pod(n, labels={"app": "web", "hash": n})) for n in names)),
            64 << 10,
        )
        held = tracemalloc.get_traced_memory()[0] - before
        items = PodItems(pieces)
        assert pieces == []  # handed over: the caller's list holds none of them
        del pieces
        typed, halfway = 0, 0
        for _item in items:
            typed += 1
            if typed == len(names) // 2:
                halfway = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert typed == len(names)
    assert held > 3_000_000
    assert halfway < held * 2 / 3
