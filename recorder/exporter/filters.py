"""Cardinality controls for ``/metrics``: which data series are exposed.

They only shape the exposition: every series is still polled and stored (``--namespace``
restricts polling itself).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

from recorder.domain import Kind
from recorder.exporter.families import DATA_FAMILIES, DataFamily


def _pattern(globs: tuple[str, ...]) -> re.Pattern[str] | None:
    if not globs:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs))


@dataclass(frozen=True, slots=True)
class ExportFilter:
    """Per-container gauges on or off, and namespace allow and deny lists of shell-style
    patterns (``team-*``, ``kube-system``). An empty allow list allows every namespace; the
    deny list wins over the allow list. Node gauges are always exposed."""

    containers: bool = True
    namespaces: tuple[str, ...] = ()
    exclude_namespaces: tuple[str, ...] = ()
    _allow: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    _deny: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "namespaces", tuple(self.namespaces))
        object.__setattr__(self, "exclude_namespaces", tuple(self.exclude_namespaces))
        object.__setattr__(self, "_allow", _pattern(self.namespaces))
        object.__setattr__(self, "_deny", _pattern(self.exclude_namespaces))

    def allows_namespace(self, namespace: str) -> bool:
        if self._allow is not None and self._allow.fullmatch(namespace) is None:
            return False
        return self._deny is None or self._deny.fullmatch(namespace) is None


def exposed_families(export_filter: ExportFilter) -> tuple[DataFamily, ...]:
    """The data families ``/metrics`` serves, in order."""
    return tuple(
        f for f in DATA_FAMILIES if export_filter.containers or f.kind is not Kind.CONTAINER
    )
