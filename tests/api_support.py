"""What the HTTP API's tests share: the clock they run at, the samples the ``api_store`` fixture
(tests/integration/conftest.py) holds, and a store whose database is down or outdated."""

from __future__ import annotations

from typing import Any

from recorder.domain import Batch, Kind, Sample, SeriesKey
from recorder.errors import StoreError
from recorder.store import Store

NOW = 1_714_557_600.0  # 2024-05-01T10:00:00Z
T0 = int(NOW * 1000) - 60_000


def write_history(store: Store) -> Store:
    """Two containers' and a node's samples of a minute ago."""
    store.write(
        Batch(
            Kind.CONTAINER,
            (
                Sample(
                    SeriesKey.for_container("shop", "web", "app"), T0, 30_000, 487_558_164, 2**30
                ),
                Sample(SeriesKey.for_container("shop", "web", "app"), T0 + 15_000, 30_000, 1, 2),
                Sample(SeriesKey.for_container("kube-system", "dns", "coredns"), T0, 30_000, 0, 7),
            ),
        ),
        now_ms=T0,
    )
    store.write(
        Batch(Kind.NODE, (Sample(SeriesKey.for_node("n1"), T0, 30_000, 2_250_000_000, 9),)),
        now_ms=T0,
    )
    return store


class FailingStore:
    """A store whose database is down, or at an older schema."""

    def __init__(self, store: Store, *, down: bool = False, outdated: bool = False) -> None:
        self._store, self._down, self._outdated = store, down, outdated

    def ping(self) -> None:
        if self._down:
            raise StoreError("database sqlite:///x is unreachable: disk I/O error")

    def schema_is_current(self) -> bool:
        return not self._outdated

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)
