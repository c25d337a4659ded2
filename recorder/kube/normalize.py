"""Typed Metrics API items to domain samples, one rejection per bad item (pure, total).

Rules (``reason`` of each rejection in brackets):
- a node or pod with no name [missing_name], a name that is too long or holds control characters
  [bad_name], a null [null_timestamp], invalid or pre-Kubernetes [bad_timestamp] or future
  [future_timestamp] timestamp, or an invalid or out-of-range window [bad_window] is rejected
  whole;
- a container with no name or a bad one, missing ``cpu``/``memory`` usage [missing_usage], an
  unparseable or out-of-range [bad_quantity] or negative [negative_usage] quantity is rejected
  alone; its pod's other containers are kept;
- a pod label with an invalid key or value is dropped alone [bad_label]; the pod is kept;
- a pod with an empty container list produces no samples and no rejection (metrics-server
  reports pods whose containers it has not scraped yet that way);
- a missing ``window`` is stored as 0 (unknown); values are never invented;
- anything else that goes wrong with one item rejects that item alone [malformed_item]: no
  exception leaves ``normalize_nodes``/``normalize_pods``.

The limits are the storage columns' (signed 64-bit values, a signed 32-bit window in ms) and
the ones Kubernetes itself sets on names (253 characters), so whatever passes here can be
written by every dialect.
"""

from __future__ import annotations

import math
import re
from collections.abc import ItemsView, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from itertools import islice
from sys import intern

import msgspec

from recorder import units
from recorder.domain import DEFAULT_CLUSTER, Batch, Kind, PodRef, Rejection, Samples, SeriesKey
from recorder.errors import QuantityError
from recorder.kube import quantities, wire
from recorder.timeutil import MINUTE_MS

INT64_MAX = 2**63 - 1
"""The largest CPU nanocores or memory bytes a sample may hold (a signed 64-bit column)."""
MAX_WINDOW_MS = 2**31 - 1
"""The longest window a sample may hold (a signed 32-bit column of milliseconds, 24.8 days)."""
MIN_TIMESTAMP_MS = 1_388_534_400_000
"""2014-01-01T00:00:00Z: Kubernetes did not exist before, so an earlier timestamp is wrong."""
DEFAULT_MAX_FUTURE_SKEW_MS = 5 * MINUTE_MS
"""How far ahead of the recorder's clock a sample's timestamp may be (5 minutes)."""
MAX_NAME_CHARS = 253
"""Kubernetes' own limit on object names (a DNS subdomain)."""
MAX_LABEL_KEY_CHARS = 317
"""A label key: a 253-character DNS subdomain prefix, "/", a 63-character name."""
MAX_LABEL_VALUE_CHARS = 1024
"""Kubernetes allows 63; values up to this are kept anyway (nothing breaks with them)."""
MAX_QUANTITY_CHARS = 64
MAX_WINDOW_CHARS = 64
"""metrics-server writes quantities and windows of a dozen characters; a longer string is not
one of them, and is refused before an exact parser spends time on millions of digits."""

_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})\Z"
)
_UNSTORABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
"""Control characters (C0, DEL, C1) and lone surrogates: no name or label holds them, and
PostgreSQL refuses NUL in text outright."""
_NS_PER_MS = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_SHOWN_CHARS = 80


class _Reject(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def shown(text: str) -> str:
    """``text`` safe to print in a log line or a rejection: control characters escaped, cut to
    80 characters with the full length said."""
    cut = text[:_SHOWN_CHARS]
    safe = cut if _storable(cut) else repr(cut)[1:-1]
    return safe if len(text) <= _SHOWN_CHARS else f"{safe}… ({len(text)} characters)"


def _storable(text: str) -> bool:
    return text.isprintable() or _UNSTORABLE.search(text) is None


def _check_name(what: str, name: str | None) -> str:
    if name and len(name) <= MAX_NAME_CHARS and name.isprintable():
        return name  # every real name
    if not name:
        raise _Reject("missing_name", f"{what} is missing")
    if len(name) > MAX_NAME_CHARS:
        raise _Reject(
            "bad_name",
            f"{what} {shown(name)!r} is longer than Kubernetes' limit of {MAX_NAME_CHARS} "
            "characters; this is not a name a real API server returns",
        )
    if not _storable(name):
        raise _Reject(
            "bad_name",
            f"{what} {shown(name)!r} holds control characters (NUL, newline, ...), which no "
            "Kubernetes name has and the database cannot store",
        )
    return name


def _ahead(milliseconds: int) -> str:
    seconds = milliseconds / 1000
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


class Remembered:
    """What normalizing one list keeps for the next poll of the same list.

    A list repeats nearly all of its series and pods' labels every poll. Remembering the series
    keys it made (only those of the latest list) spares making a key per container and hands
    the writer and the exporter the same key objects poll after poll, so their dictionary
    lookups stop at identity; remembering each pod's labels as received, with what checking
    them gave, spares checking unchanged labels again (their rejections are said again). One
    ``Remembered`` serves one list of one cluster.
    """

    def __init__(self) -> None:
        self.cluster: str | None = None
        self.keys: dict[tuple[str, str, str], SeriesKey] = {}
        """A node list's keys by ("", node, "")."""
        self.pods: dict[PodRef, _PodMemo] = {}
        """A pod list's pods: one lookup per pod finds its labels and its containers' keys."""
        self.texts: dict[bytes, msgspec.Raw] = {}
        """The pods' labels texts, one copy of each (pods of one workload share theirs: at
        150,000 simulated pods, 17,000 texts of about 150 bytes)."""


_PodMemo = tuple[
    msgspec.Raw,
    Mapping[str, str],
    tuple[Rejection, ...],
    tuple[SeriesKey, ...],
    PodRef,
]
"""A pod's labels as received (their JSON text, the copy in ``Remembered.texts``), as kept,
the rejections checking them gave, its containers' keys (a tuple, searched by container name:
a pod has a few containers, and a tuple of one is 136 bytes smaller than a dict, 20 MB at
150,000 pods), and its (namespace, pod) as first seen, which the batch's labels use again
(this poll's copies of the names are let go: about 20 MB at 150,000 pods). A pod whose labels
and containers did not change keeps its tuple from poll to poll."""


class PodLabels(Mapping[PodRef, Mapping[str, str]]):
    """A pod list's labels by (namespace, pod), read from the memos its normalizing kept for
    the next poll: every pod that passed the checks has one, and its labels are the memo's. No
    second map of every pod per poll (150,000 entries: 31 ms to fill and 5.0 MiB while the
    batch waits and is written, measured alone)."""

    __slots__ = ("_pods",)

    def __init__(self, pods: Mapping[PodRef, _PodMemo]) -> None:
        self._pods = pods

    def __getitem__(self, ref: PodRef) -> Mapping[str, str]:
        return self._pods[ref][1]

    def __iter__(self) -> Iterator[PodRef]:
        return iter(self._pods)

    def __len__(self) -> int:
        return len(self._pods)

    def __contains__(self, ref: object) -> bool:
        return ref in self._pods

    def items(self) -> ItemsView[PodRef, Mapping[str, str]]:
        return _PodLabelItems(self)

    def __repr__(self) -> str:
        return f"PodLabels({dict(self.items())!r})"


class _PodLabelItems(ItemsView[PodRef, Mapping[str, str]]):
    """``PodLabels.items()``, iterated without a lookup per pod."""

    _mapping: PodLabels

    def __iter__(self) -> Iterator[tuple[PodRef, Mapping[str, str]]]:
        for ref, memo in self._mapping._pods.items():
            yield ref, memo[1]


class _Parsers:
    """Memoized, range-checked timestamp, window and label checks: a list repeats the same
    strings a lot (a timestamp per scrape, a few windows, the same label keys and values)."""

    def __init__(self, now_ms: int, max_future_skew_ms: int) -> None:
        self.latest_ms = now_ms + max_future_skew_ms
        self.now_ms = now_ms
        self.skew_ms = max_future_skew_ms
        self.timestamps: dict[str, int] = {}
        self.windows: dict[str, int] = {}
        self.good_keys: set[str] = set()
        self.good_values: set[str] = set()
        self.label_sets: dict[frozenset[tuple[str, str]], Mapping[str, str]] = {}

    def timestamp_ms(self, text: str | None, whose: str) -> int:
        if text is None:
            raise _Reject("null_timestamp", "timestamp is null or missing")
        cached = self.timestamps.get(text)
        if cached is None:
            cached = _parse_timestamp(text)
            self.timestamps[text] = cached
        if cached > self.latest_ms:
            raise _Reject(
                "future_timestamp",
                f"timestamp {text} is {_ahead(cached - self.now_ms)} ahead of the recorder's "
                f"clock (at most {_ahead(self.skew_ms)} is allowed): the clock of {whose} is "
                "probably wrong; fix its time synchronisation (NTP, chrony)",
            )
        return cached

    def window_ms(self, text: str | None) -> int:
        if text is None:
            return 0
        cached = self.windows.get(text)
        if cached is None:
            cached = _parse_window(text)
            self.windows[text] = cached
        return cached

    def labels(
        self, labels: dict[str, str] | None, pod: str, namespace: str, rejections: list[Rejection]
    ) -> Mapping[str, str]:
        if not labels:
            return {}
        good_keys, good_values = self.good_keys, self.good_values
        bad: list[str] = []
        for key, value in labels.items():
            if key in good_keys and value in good_values:
                continue
            problem = _label_problem(key, value)
            if problem is None:
                good_keys.add(key)
                good_values.add(value)
            else:
                bad.append(key)
                rejections.append(
                    Rejection(Kind.CONTAINER, pod, "bad_label", problem, namespace=namespace)
                )
        return self._shared({k: v for k, v in labels.items() if k not in bad} if bad else labels)

    def _shared(self, labels: dict[str, str]) -> Mapping[str, str]:
        """One object per distinct label set of the list (the pods of a ReplicaSet share
        theirs), its keys and values interned (shared with every other pod's): at 150,000
        pods, what is kept of labels shrinks from about 120 MB to a fraction of it."""
        identity = frozenset(labels.items())
        found = self.label_sets.get(identity)
        if found is None:
            found = self.label_sets[identity] = {intern(k): intern(v) for k, v in labels.items()}
        return found


def _label_problem(key: str, value: str) -> str | None:
    kept = "the label is dropped, the pod's samples are kept"
    if not key or len(key) > MAX_LABEL_KEY_CHARS:
        return (
            f"label key {shown(key)!r} is empty or longer than {MAX_LABEL_KEY_CHARS} characters "
            f"(Kubernetes allows a 253-character prefix and a 63-character name): {kept}"
        )
    if len(value) > MAX_LABEL_VALUE_CHARS:
        return (
            f"the value of label {shown(key)!r} is {len(value)} characters long (Kubernetes "
            f"allows 63, the recorder keeps up to {MAX_LABEL_VALUE_CHARS}): {kept}"
        )
    if not (_storable(key) and _storable(value)):
        return (
            f"label {shown(key)!r}={shown(value)!r} holds control characters (NUL, newline, ...)"
            f", which no Kubernetes label has and the database cannot store: {kept}"
        )
    return None


def _parse_timestamp(text: str) -> int:
    if not _RFC3339.match(text):
        raise _Reject("bad_timestamp", f"timestamp {shown(text)!r} is not RFC 3339")
    try:
        moment = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
        milliseconds = (moment - _EPOCH) // _ONE_MS
    except (ValueError, OverflowError) as exc:
        # Month 13, day 45, hour 99, year 0, an offset of 24 h or more, second 60.
        raise _Reject("bad_timestamp", f"timestamp {text!r} is not a valid time: {exc}") from None
    if milliseconds < MIN_TIMESTAMP_MS:
        raise _Reject(
            "bad_timestamp",
            f"timestamp {text} is before 2014-01-01, when Kubernetes did not exist yet: the "
            "clock of the node that produced it is wrong",
        )
    return milliseconds


def _parse_window(text: str) -> int:
    if len(text) > MAX_WINDOW_CHARS:
        raise _Reject("bad_window", f"window {shown(text)!r} is not a Go duration")
    try:
        nanoseconds = units.parse_go_duration(text)
    except QuantityError as exc:
        raise _Reject("bad_window", str(exc)) from exc
    if nanoseconds < 0:
        raise _Reject("bad_window", f"window {text!r} is negative")
    milliseconds = -(-nanoseconds // _NS_PER_MS)  # round up: 1µs is not 0
    if milliseconds > MAX_WINDOW_MS:
        raise _Reject(
            "bad_window",
            f"window {text!r} ({milliseconds} ms) is longer than the {MAX_WINDOW_MS} ms "
            "(24.8 days) a sample's window may be; metrics-server's windows are seconds to "
            "minutes, so this one is wrong",
        )
    return milliseconds


def _usage(usage: wire.Usage | None) -> tuple[int, int]:
    if usage is None:
        raise _Reject("missing_usage", "usage is missing or empty")
    cpu_text = usage.cpu if type(usage.cpu) is str else None  # else UNSET: absent
    memory_text = usage.memory if type(usage.memory) is str else None
    if cpu_text is None and memory_text is None:
        raise _Reject("missing_usage", "usage is missing or empty")
    # What metrics-server writes ("12345n", "6789Ki"), checked without a call per quantity:
    # at most 18 and 15 ASCII digits, so both fit their 64-bit columns.
    if cpu_text and memory_text and cpu_text[-1] == "n" and memory_text[-2:] == "Ki":
        cpu_digits, memory_digits = cpu_text[:-1], memory_text[:-2]
        if (
            len(cpu_digits) <= 18
            and len(memory_digits) <= 15
            and cpu_digits.isdigit()
            and memory_digits.isdigit()
            and cpu_digits.isascii()
            and memory_digits.isascii()
        ):
            return int(cpu_digits), int(memory_digits) << 10
    if cpu_text is None or memory_text is None:
        missing = " and ".join(
            n for n, v in (("cpu", cpu_text), ("memory", memory_text)) if v is None
        )
        raise _Reject("missing_usage", f"usage has no {missing}")
    if len(cpu_text) > MAX_QUANTITY_CHARS or len(memory_text) > MAX_QUANTITY_CHARS:
        text = max(cpu_text, memory_text, key=len)
        raise _Reject(
            "bad_quantity",
            f"quantity {shown(text)!r} is longer than {MAX_QUANTITY_CHARS} characters; "
            "metrics-server never writes such a quantity",
        )
    try:
        cpu = units.cpu_nanocores(cpu_text)
        memory = units.memory_bytes(memory_text)
    except QuantityError as exc:
        raise _Reject("bad_quantity", str(exc)) from exc
    if cpu < 0 or memory < 0:
        raise _Reject("negative_usage", f"usage is negative: cpu={cpu_text} memory={memory_text}")
    if cpu > INT64_MAX:
        raise _Reject(
            "bad_quantity",
            f"cpu {cpu_text!r} is {_digits(cpu)} nanocores, out of range: a sample holds at "
            f"most {INT64_MAX} ({INT64_MAX // 10**9} cores)",
        )
    if memory > INT64_MAX:
        raise _Reject(
            "bad_quantity",
            f"memory {memory_text!r} is {_digits(memory)} bytes, out of range: a sample holds "
            f"at most {INT64_MAX} (8 EiB)",
        )
    return cpu, memory


_SLICE_PODS = 2_000
"""Pods whose quantities are parsed as one column (``decode.PodItems`` types about as many at
a time)."""


def _chunks(items: Iterable[wire.PodMetrics]) -> Iterator[list[wire.PodMetrics]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, _SLICE_PODS)):
        yield chunk


def _containers(item: wire.PodMetrics) -> Sequence[wire.ContainerMetrics]:
    """``item``'s containers, none when they cannot be read (the pod is then rejected)."""
    try:
        return item.containers or ()
    except Exception:  # not a typed item (a caller's odd object): it is rejected whole
        return ()


def _usage_values(
    items: Sequence[wire.PodMetrics],
) -> Iterator[tuple[int, int] | Exception]:
    """``_usage`` of every container of ``items`` in order, or what it raised: the quantities
    a column at a time (``quantities``) when each is in a common form, as
    metrics-server writes them, else one by one."""
    try:
        usages = [c.usage for item in items for c in item.containers or ()]
        cpus = quantities.cpu_nanocores_column([u.cpu for u in usages])  # type: ignore[union-attr]
        memories = quantities.memory_bytes_column([u.memory for u in usages])  # type: ignore[union-attr]
    except Exception:  # a missing usage, an odd item: one by one says which
        cpus = memories = None
    if cpus is not None and memories is not None:
        return zip(cpus, memories, strict=True)
    return _usage_one_by_one(items)


def _usage_one_by_one(
    items: Sequence[wire.PodMetrics],
) -> Iterator[tuple[int, int] | Exception]:
    for item in items:
        for container in _containers(item):
            try:
                yield _usage(container.usage)
            except Exception as exc:  # raised again where the container is read
                yield exc


def _digits(value: int) -> str:
    if value < 10**30:
        return str(value)
    exponent = int(math.log10(value))  # str() of an int stops at 4300 digits
    exponent += 1 if 10 ** (exponent + 1) <= value else -1 if 10**exponent > value else 0
    return f"about 10^{exponent}"


_LABELS = msgspec.json.Decoder(dict[str, str] | None)


def _received_labels(text: msgspec.Raw) -> dict[str, str] | None:
    try:
        return _LABELS.decode(text)
    except Exception as exc:  # not JSON, not a map of strings, not UTF-8: only this pod's loss
        raise _Reject("malformed_item", f"metadata.labels cannot be decoded: {exc}") from exc


def _malformed(exc: Exception) -> _Reject:
    return _Reject("malformed_item", f"the item could not be read ({type(exc).__name__}: {exc})")


def _remembered(remembered: Remembered | None, cluster: str) -> Remembered:
    if remembered is None:
        return Remembered()
    if remembered.cluster != cluster:
        remembered.cluster, remembered.keys, remembered.pods = cluster, {}, {}
        remembered.texts = {}
    elif len(remembered.texts) > 2 * len(remembered.pods) + 1024:
        remembered.texts = {}  # texts of pods long gone (the memos keep their own)
    return remembered


def normalize_nodes(
    items: Iterable[wire.NodeMetrics],
    *,
    now_ms: int,
    max_future_skew_ms: int = DEFAULT_MAX_FUTURE_SKEW_MS,
    cluster: str = DEFAULT_CLUSTER,
    remembered: Remembered | None = None,
) -> Batch:
    """Samples of a NodeMetricsList's items, each series in ``cluster``; ``now_ms`` is the
    recorder's clock, against which timestamps more than ``max_future_skew_ms`` ahead are
    rejected. ``remembered``: what the previous poll of this list made (updated)."""
    parsers = _Parsers(now_ms, max_future_skew_ms)
    memory_of = _remembered(remembered, cluster)
    known_keys = memory_of.keys
    keys: dict[tuple[str, str, str], SeriesKey] = {}
    samples = Samples()
    rejections: list[Rejection] = []
    for item in items:
        name: str | None = None
        try:
            name = item.metadata.name if item.metadata else None
            name = _check_name("metadata.name", name)
            timestamp_ms = parsers.timestamp_ms(item.timestamp, f"node {name}")
            window_ms = parsers.window_ms(item.window)
            cpu, memory = _usage(item.usage)
            identity = ("", name, "")
            key = known_keys.get(identity) or SeriesKey.for_node(name, cluster)
            keys[identity] = key
        except Exception as exc:  # one item, whatever is wrong with it, costs only itself
            bad = exc if isinstance(exc, _Reject) else _malformed(exc)
            rejections.append(Rejection(Kind.NODE, _label(name), bad.reason, bad.detail))
            continue
        samples.keys.append(key)
        samples.timestamps_ms.append(timestamp_ms)
        samples.windows_ms.append(window_ms)
        samples.cpu_nanocores.append(cpu)
        samples.memory_bytes.append(memory)
    memory_of.keys = keys
    return Batch(Kind.NODE, samples, {}, tuple(rejections), cluster)


def normalize_pods(
    items: Iterable[wire.PodMetrics],
    *,
    now_ms: int,
    max_future_skew_ms: int = DEFAULT_MAX_FUTURE_SKEW_MS,
    cluster: str = DEFAULT_CLUSTER,
    remembered: Remembered | None = None,
) -> Batch:
    """Samples (one per container, each series in ``cluster``) and labels of a PodMetricsList's
    items; ``now_ms`` and ``remembered`` as for ``normalize_nodes``. The labels are keyed by
    (namespace, pod): the whole batch is of one cluster, ``Batch.cluster``."""
    parsers = _Parsers(now_ms, max_future_skew_ms)
    memory_of = _remembered(remembered, cluster)
    known_pods, texts = memory_of.pods, memory_of.texts
    pods_now: dict[PodRef, _PodMemo] = {}
    # The columns of the batch's samples, appended to by name (no object per sample).
    sample_keys: list[SeriesKey] = []
    sample_timestamps: list[int] = []
    sample_windows: list[int] = []
    sample_cpu: list[int] = []
    sample_memory: list[int] = []
    rejections: list[Rejection] = []
    # The common case of each check is inlined (a known timestamp within the skew, a known
    # window, a short printable name); anything else takes the full check, which rejects.
    seen_timestamps, seen_windows, latest_ms = (
        parsers.timestamps,
        parsers.windows,
        parsers.latest_ms,
    )
    for chunk in _chunks(items):
        # Every container's (cpu, memory) of the slice, or the reason it cannot be read, in
        # order: a column at a time when every quantity is in a common form.
        value_of = _usage_values(chunk).__next__
        for item in chunk:
            pod: str | None = None
            namespace: str | None = None
            try:
                meta = item.metadata or wire.ObjectMeta()
                pod, namespace = meta.name, meta.namespace
                before = known_pods.get((namespace, pod))  # type: ignore[arg-type]
                if before is not None:  # kept by the last poll: its names passed these checks
                    namespace, pod = before[4]
                else:
                    if not (pod and len(pod) <= MAX_NAME_CHARS and pod.isprintable()):
                        pod = _check_name("metadata.name", pod)
                    if not (
                        namespace and len(namespace) <= MAX_NAME_CHARS and namespace.isprintable()
                    ):
                        namespace = _check_name("metadata.namespace", namespace)
                timestamp_ms = seen_timestamps.get(item.timestamp) if item.timestamp else None
                if timestamp_ms is None or timestamp_ms > latest_ms:
                    timestamp_ms = parsers.timestamp_ms(
                        item.timestamp, f"the node running pod {namespace}/{pod}"
                    )
                window_ms = seen_windows.get(item.window) if item.window else None
                if window_ms is None:
                    window_ms = parsers.window_ms(item.window)
                raw = meta.labels
                ref = (intern(namespace), pod) if before is None else before[4]
                if before is not None and before[0] == raw:
                    pod_labels, dropped, old_keys = before[1], before[2], before[3]
                    rejections.extend(dropped)
                else:
                    received = _received_labels(raw)
                    text = bytes(raw)  # a copy: the view holds the whole part of the response
                    raw = texts.get(text) or texts.setdefault(text, msgspec.Raw(text))
                    first = len(rejections)
                    pod_labels = parsers.labels(received, pod, namespace, rejections)
                    dropped = tuple(rejections[first:])
                    old_keys = before[3] if before is not None else ()
                    before = None  # the labels changed: a new memo
                containers = item.containers or ()
            except Exception as exc:
                for _ in _containers(item):  # its containers' values, unused
                    value_of()
                bad = exc if isinstance(exc, _Reject) else _malformed(exc)
                rejections.append(
                    Rejection(
                        Kind.CONTAINER, _label(pod), bad.reason, bad.detail, _label(namespace, "")
                    )
                )
                continue
            start = len(sample_keys)
            hits = 0
            for container in containers:
                name: str | None = None
                value = value_of()
                try:
                    name = container.name
                    for key in old_keys:  # a known container's name passed the checks before
                        if key.container == name:
                            known = 1
                            break
                    else:
                        if not (name and len(name) <= MAX_NAME_CHARS and name.isprintable()):
                            name = _check_name("container name", name)
                        key = SeriesKey.for_container(namespace, pod, intern(name), cluster)
                        known = 0
                    if isinstance(value, Exception):
                        raise value
                    cpu, memory = value
                    hits += known
                except Exception as exc:
                    bad = exc if isinstance(exc, _Reject) else _malformed(exc)
                    rejections.append(
                        Rejection(
                            Kind.CONTAINER,
                            f"{pod}/{_label(name)}",
                            bad.reason,
                            bad.detail,
                            namespace,
                        )
                    )
                    continue
                sample_keys.append(key)
                sample_timestamps.append(timestamp_ms)
                sample_windows.append(window_ms)
                sample_cpu.append(cpu)
                sample_memory.append(memory)
            made = len(sample_keys) - start
            if before is not None and hits == made == len(old_keys):
                pods_now[ref] = before  # the same labels and containers: kept as it was
            else:
                # The keys of the containers sampled now (a rejected one's is made again later).
                keys = tuple(sample_keys[start:])
                if before is not None:
                    raw = before[0]  # the kept copy, not this poll's view
                pods_now[ref] = (raw, pod_labels, dropped, keys, ref)
    memory_of.pods = pods_now
    samples = Samples(sample_keys, sample_timestamps, sample_windows, sample_cpu, sample_memory)
    return Batch(Kind.CONTAINER, samples, PodLabels(pods_now), tuple(rejections), cluster)


def _label(name: object, missing: str = "?") -> str:
    """A name as a rejection shows it: "?" when absent, escaped and cut when odd."""
    if not isinstance(name, str) or not name:
        return missing
    return name if len(name) <= MAX_NAME_CHARS and _storable(name) else shown(name)
