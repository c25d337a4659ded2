"""``Store``: the one object the poller, the HTTP API and the CLI use to reach the database."""

from __future__ import annotations

import threading

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from recorder.domain import Batch, HistoryQuery, SeriesPoints, WriteResult
from recorder.errors import StoreError
from recorder.store import engine as engines
from recorder.store import migrate
from recorder.store.reader import read_history
from recorder.store.writer import SampleWriter


class Store:
    """Writes batches (one transaction each) and reads history. Thread-safe: one writer at a
    time inside this process, any number of readers."""

    def __init__(self, engine: Engine, *, display_url: str):
        self.engine = engine
        self.display_url = display_url
        self._writer = SampleWriter(engine)
        self._write_lock = threading.Lock()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def migrate(self) -> None:
        migrate.upgrade(self.engine)

    def schema_is_current(self) -> bool:
        try:
            return migrate.is_current(self.engine)
        except SQLAlchemyError as exc:
            raise StoreError(
                f"cannot read the schema version of {self.display_url}: {exc}"
            ) from exc

    def ping(self) -> None:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            raise StoreError(f"database {self.display_url} is unreachable: {exc}") from exc

    def write(self, batch: Batch, *, now_ms: int) -> WriteResult:
        with self._write_lock:
            try:
                return self._writer.write(batch, now_ms)
            except SQLAlchemyError as exc:
                raise StoreError(
                    f"writing {len(batch.samples)} {batch.kind.value} samples to "
                    f"{self.display_url} failed: {exc.__class__.__name__}: {exc.orig or exc}"
                    if hasattr(exc, "orig")
                    else f"writing to {self.display_url} failed: {exc}"
                ) from exc

    def history(self, query: HistoryQuery, *, max_points: int) -> list[SeriesPoints]:
        try:
            return read_history(self.engine, query, max_points=max_points)
        except SQLAlchemyError as exc:
            raise StoreError(f"reading history from {self.display_url} failed: {exc}") from exc

    def close(self) -> None:
        self.engine.dispose()


def open_store(url: str) -> Store:
    return Store(engines.create(url), display_url=engines.redact(url))
