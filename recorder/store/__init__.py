"""Storage of samples: SQLite (embedded default) or PostgreSQL, behind one ``Store``."""

from __future__ import annotations

from recorder.store.engine import redact
from recorder.store.sql import Store, open_store

__all__ = ["Store", "open_store", "redact"]
