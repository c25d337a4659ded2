"""The README's table of metrics is what ``/metrics`` serves: every family (name as scraped,
type, label names) has its row, and every row is served.

Rows naming a
pattern (``process_*``) cover families of prometheus-client's collectors: each must match some
served family, of a type and with labels the row lists. ``<name>_created`` families of
prometheus-client's counters and histograms are described in the text, not the table.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from recorder.store import open_store
from tests.metrics_support import relayed_registry

REPO = Path(__file__).resolve().parents[2]
START, END = "<!-- metrics-table:start -->", "<!-- metrics-table:end -->"


@dataclass(frozen=True)
class Family:
    type: str
    labels: frozenset[str]


@dataclass(frozen=True)
class Row:
    names: tuple[str, ...]
    types: frozenset[str]
    labels: frozenset[str]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Family]]:
    """What the service's ``/metrics`` serves (``relayed_registry``)."""
    store = open_store(f"sqlite:///{tmp_path_factory.mktemp('table') / 'rec.db'}")
    store.migrate()
    relay, _ = relayed_registry(store)
    store.close()
    text = b"".join(relay.exposition(openmetrics=False, gzip=False)).decode()
    families: dict[str, Family] = {}
    for family in text_string_to_metric_families(text):
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = frozenset(k for s in family.samples for k in s.labels) - {"le"}
        assert name not in families, f"{name} is served twice"
        families[name] = Family(family.type, labels)
    yield {
        name: family
        for name, family in families.items()
        if not (
            name.endswith("_created")
            and (name.removesuffix("_created") in families or f"{name[:-8]}_total" in families)
        )
    }


def table(path: Path) -> list[Row]:
    text = path.read_text()
    if START not in text or END not in text:
        pytest.fail(f"{path.relative_to(REPO)} has no metrics table between {START} and {END}")
    body = text.split(START, 1)[1].split(END, 1)[0]
    rows = []
    for line in body.strip().splitlines()[2:]:  # after the header and its rule
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        assert len(cells) == 4, line
        names = tuple(re.findall(r"`([^`]+)`", cells[0]))
        assert names, line
        types = frozenset(t.strip() for t in cells[1].split(",") if t.strip())
        rows.append(Row(names, types, frozenset(re.findall(r"`([^`]+)`", cells[2]))))
    return rows


def test_metrics_table_is_what_metrics_serves(served: dict[str, Family]) -> None:
    rows = table(REPO / "README.md")
    exact = {name: row for row in rows for name in row.names if "*" not in name}
    patterns = [(name, row) for row in rows for name in row.names if "*" in name]

    for name, family in served.items():
        if name in exact:
            row = exact[name]
            assert (family.type, family.labels) == (next(iter(row.types)), row.labels), name
            assert len(row.types) == 1, name
            continue
        matching = [row for pattern, row in patterns if fnmatch.fnmatchcase(name, pattern)]
        assert matching, f"{name} ({family.type}) is served but not in the README table"
        assert family.type in matching[0].types and family.labels <= matching[0].labels, name

    assert not set(exact) - set(served), f"in the table but not served: {set(exact) - set(served)}"
    for pattern, _ in patterns:
        assert any(fnmatch.fnmatchcase(name, pattern) for name in served), pattern
