"""Fuzzing the decoder and normalizer with mutated real responses (hypothesis).

Seeds are the real responses in shared/fixtures and the odd ones in tests/fixtures. Mutations:
a value anywhere replaced by an odd JSON value (numbers past int64, ``1e999``, deep arrays,
invalid UTF-8, lone surrogates, calendar-invalid times, control characters, wrong types), a
key removed, bytes flipped, the body cut short. Whatever comes out:

- ``decode_*_list`` raises ``MalformedResponseError`` and nothing else, or returns one decoded
  item or one rejection per item of the list;
- ``normalize_*`` never raises; every item is accounted for (a node: one sample or one
  rejection; a pod: one rejection, or one sample or rejection per container), and each item's
  outcome is the same alone as in the list (one item cannot cost another);
- every sample fits the columns: int64 values, a window of 0..2^31-1 ms, a timestamp between
  2014 and now + the allowed skew, names and labels without control characters.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recorder.domain import Batch, Rejection
from recorder.errors import MalformedResponseError
from recorder.kube import wire
from recorder.kube.decode import decode_node_list, decode_pod_list
from recorder.kube.normalize import (
    DEFAULT_MAX_FUTURE_SKEW_MS,
    INT64_MAX,
    MAX_LABEL_KEY_CHARS,
    MAX_LABEL_VALUE_CHARS,
    MAX_NAME_CHARS,
    MAX_WINDOW_MS,
    MIN_TIMESTAMP_MS,
    normalize_nodes,
    normalize_pods,
)
from tests.conftest import LOCAL_FIXTURES, SHARED_FIXTURES

NOW_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z, after every fixture
CONTROL = {*range(0x20), *range(0x7F, 0xA0)}


@dataclass(frozen=True)
class Seed:
    name: str
    pods: bool
    document: dict[str, Any]


def _seeds() -> list[Seed]:
    seeds = []
    for path in sorted([*SHARED_FIXTURES.glob("*.json"), *LOCAL_FIXTURES.glob("odd_*.json")]):
        document = json.loads(Path(path).read_text())
        kind = document.get("kind") if isinstance(document, dict) else None
        if kind in ("NodeMetrics", "PodMetrics"):  # a single object: as a one-item list
            document = {
                "kind": f"{kind}List",
                "apiVersion": document["apiVersion"],
                "items": [document],
            }
        elif kind not in ("NodeMetricsList", "PodMetricsList"):
            continue
        seeds.append(Seed(path.name, document["kind"] == "PodMetricsList", document))
    return seeds


SEEDS = _seeds()


def test_every_kind_of_seed_is_there() -> None:
    assert len(SEEDS) == 6 and {seed.pods for seed in SEEDS} == {True, False}


# --- odd JSON values, some only writable as raw bytes -------------------------------------------


@dataclass(frozen=True)
class Raw:
    """Bytes written as they are, where json.dumps cannot write them."""

    data: bytes


def nested(depth: int) -> Raw:
    return Raw(b"[" * depth + b"]" * depth)


RAW_VALUES = [
    Raw(b"1e999"),
    Raw(b"-1e999"),
    Raw(b"1e-999"),
    Raw(b"123456789012345678901234567890"),
    Raw(b'"\xff\xfe"'),  # invalid UTF-8
    Raw(b'"ok\xc3("'),
    Raw(b'"\\ud800"'),  # a lone surrogate escape
    Raw(b'"\\u0000"'),
    nested(3),
    nested(200),
    nested(3000),  # deeper than the interpreter's recursion limit
]
ODD_BY_FIELD = {
    "timestamp": [
        "2024-13-45T99:99:99Z",
        "0000-01-01T00:00:00Z",
        "2024-05-01T10:00:00+24:00",
        "2024-05-01T10:00:00-99:99",
        "2024-05-01T23:59:60Z",
        "2013-12-31T23:59:59Z",
        "2099-01-01T00:00:00Z",
        "2024-12-31T23:59:59.999999999-23:59",
    ],
    "window": ["600h", "596h31m23.647s", "596h31m23.648s", "-30s", "1" * 70 + "s", "0"],
    "cpu": ["10G", "1e999", "-1", "9223372036854775808n", "9223372036854775807n", "1" * 70],
    "memory": ["10E", "1e999", "8Ei", "-1Ki", "0.5", "12 cores"],
    "name": ["", "\x00", "a\nb", "n" * 253, "n" * 254, "n" * 5000, "nœud"],
    "labels": ["", "\x00", "k" * 318, "v" * 1025, "ok"],
}
ODD_BY_FIELD["namespace"] = ODD_BY_FIELD["name"]
ODD_STRINGS = [text for texts in ODD_BY_FIELD.values() for text in texts]
odd_values: st.SearchStrategy[object] = st.one_of(
    st.sampled_from(RAW_VALUES),
    st.sampled_from(ODD_STRINGS),
    st.sampled_from([None, True, False, 0, -1, 1.5, {}, [], {"a": 1}, ["x"]]),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=20),
)


def dump(value: object) -> bytes:
    if isinstance(value, Raw):
        return value.data
    if isinstance(value, dict):
        members = (json.dumps(k).encode() + b":" + dump(v) for k, v in value.items())
        return b"{" + b",".join(members) + b"}"
    if isinstance(value, list):
        return b"[" + b",".join(dump(v) for v in value) + b"]"
    return json.dumps(value).encode()


# --- mutations ----------------------------------------------------------------------------------

Path_ = tuple[str | int, ...]


def field_of(path: Path_) -> str | None:
    """Which value normalize reads is at ``path``, if any."""
    if "labels" in path:
        return "labels"
    return path[-1] if path and path[-1] in ODD_BY_FIELD else None  # type: ignore[return-value]


def paths(value: object, prefix: Path_ = ()) -> list[Path_]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths(child, (*prefix, index))
    return found


def value_at(document: Any, path: Path_) -> Any:
    for step in path:
        document = document[step]
    return document


def replaced(document: Any, path: Path_, new: object) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(document, dict):
        return {k: (replaced(v, rest, new) if k == head else v) for k, v in document.items()}
    return [replaced(v, rest, new) if i == head else v for i, v in enumerate(document)]


def without(document: Any, path: Path_) -> Any:
    head, rest = path[0], path[1:]
    if not rest:
        if isinstance(document, dict):
            return {k: v for k, v in document.items() if k != head}
        return [v for i, v in enumerate(document) if i != head]
    if isinstance(document, dict):
        return {k: (without(v, rest) if k == head else v) for k, v in document.items()}
    return [without(v, rest) if i == head else v for i, v in enumerate(document)]


@st.composite
def mutated_bodies(draw: st.DrawFn, *, bytewise: bool = True) -> tuple[Seed, bytes]:
    """A seed with 1-4 values replaced, removed or added, then (if ``bytewise``) sometimes a
    byte or two flipped or the body cut."""
    seed = draw(st.sampled_from(SEEDS))
    document: Any = seed.document
    for _ in range(draw(st.integers(1, 4))):
        targets = paths(document)[1:]  # not the root: a whole other document is just malformed
        values = odd_values
        if draw(st.booleans()):  # half the time, one of the values normalize reads
            targets = [p for p in targets if field_of(p)] or targets
        path = draw(st.sampled_from(targets))
        field = field_of(path)
        if field and draw(st.booleans()):  # an odd value of the kind this field holds
            values = st.sampled_from(ODD_BY_FIELD[field])
        target = value_at(document, path)
        action = draw(st.sampled_from(["replace", "replace", "replace", "remove", "add"]))
        if action == "remove" and path:
            document = without(document, path)
        elif action == "add" and isinstance(target, dict):  # a new member with an odd key
            key = draw(st.sampled_from(ODD_BY_FIELD["labels"]))
            document = replaced(document, path, {**target, key: draw(values)})
        else:
            document = replaced(document, path, draw(values))
    body = dump(document)
    for _ in range(draw(st.sampled_from([0, 0, 0, 0, 1, 2])) if bytewise else 0):
        if not body:
            break
        action = draw(st.sampled_from(["flip", "flip", "cut"]))
        position = draw(st.integers(0, len(body) - 1))
        if action == "cut":
            body = body[:position]
        else:
            byte = draw(
                st.sampled_from([0x00, 0xFF, 0x80, ord('"'), ord("{"), ord("]"), ord("\\")])
            )
            body = body[:position] + bytes([byte]) + body[position + 1 :]
    return seed, body


# --- the properties -----------------------------------------------------------------------------


class Envelope(msgspec.Struct):
    items: list[msgspec.Raw] | None = None


def fine_name(name: str) -> bool:
    return 0 < len(name) <= MAX_NAME_CHARS and not any(ord(c) in CONTROL for c in name)


def check_sample_columns(batch: Batch) -> None:
    for sample in batch.samples:
        assert 0 <= sample.cpu_nanocores <= INT64_MAX
        assert 0 <= sample.memory_bytes <= INT64_MAX
        assert 0 <= sample.window_ms <= MAX_WINDOW_MS
        assert MIN_TIMESTAMP_MS <= sample.timestamp_ms <= NOW_MS + DEFAULT_MAX_FUTURE_SKEW_MS
        key = sample.key
        names = [key.node] if key.node else [key.namespace, key.pod, key.container]
        assert all(fine_name(name) for name in names), key
    for labels in batch.pod_labels.values():
        for key, value in labels.items():
            assert isinstance(key, str) and isinstance(value, str)
            assert 0 < len(key) <= MAX_LABEL_KEY_CHARS and len(value) <= MAX_LABEL_VALUE_CHARS
            assert not any(ord(c) in CONTROL for c in key + value)
    for rejection in batch.rejections:
        assert rejection.reason and "\x00" not in rejection.name + rejection.detail


def accounted(item: Any, alone: Batch, pods: bool) -> None:
    rejected = [r for r in alone.rejections if r.reason != "bad_label"]
    if not pods:
        assert len(alone.samples) + len(rejected) == 1, alone
        return
    whole_pod = len(rejected) == 1 and not alone.samples
    per_container = len(alone.samples) + len(rejected) == len(item.containers or ())
    assert whole_pod or per_container, alone


def run(seed: Seed, body: bytes) -> None:
    decode: Callable[[bytes], tuple[Sequence[Any], list[Rejection]]]
    normalize: Callable[..., Batch]
    if seed.pods:
        decode, normalize = decode_pod_list, normalize_pods
    else:
        decode, normalize = decode_node_list, normalize_nodes
    try:
        items, bad = decode(body)
    except MalformedResponseError:
        return  # the whole response fails alone, with reason "malformed"
    listed = msgspec.json.decode(body, type=Envelope).items or []
    assert len(items) + len(bad) == len(listed)
    assert all(r.reason == "malformed_item" for r in bad)
    batch = normalize(items, now_ms=NOW_MS)
    check_sample_columns(batch)
    samples: list[Any] = []
    rejections: list[Rejection] = []
    for item in items:
        assert isinstance(item, wire.PodMetrics if seed.pods else wire.NodeMetrics)
        alone = normalize([item], now_ms=NOW_MS)
        accounted(item, alone, seed.pods)
        samples += alone.samples
        rejections += alone.rejections
    assert batch.samples == tuple(samples)
    assert batch.rejections == tuple(rejections)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutated_bodies())
def test_mutated_real_responses_never_crash_and_lose_nothing_else(
    case: tuple[Seed, bytes],
) -> None:
    run(*case)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutated_bodies(bytewise=False))
def test_odd_values_in_valid_json_cost_only_their_own_items(case: tuple[Seed, bytes]) -> None:
    run(*case)


def test_the_unmutated_seeds_decode_cleanly() -> None:
    for seed in SEEDS:
        run(seed, dump(seed.document))
