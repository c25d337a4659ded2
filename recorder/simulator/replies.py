"""Rendered response bodies: a `Reply` (with its gzipped form made once, on demand) and a
bounded cache of the replies of the current time bucket."""

from __future__ import annotations

import gzip
from collections import OrderedDict
from dataclasses import dataclass, field

__all__ = ["GZIP_MIN_BYTES", "BodyCache", "Reply"]

GZIP_MIN_BYTES = 128 * 1024
"""The API server compresses responses from this size on when the client accepts gzip."""


@dataclass(slots=True)
class Reply:
    """A response body; the gzipped form is computed once, on first demand."""

    status: int
    body: bytes
    _gzipped: bytes | None = field(default=None, repr=False)

    def gzipped(self) -> bytes:
        if self._gzipped is None:
            self._gzipped = gzip.compress(self.body, compresslevel=1, mtime=0)
        return self._gzipped


class BodyCache:
    """Rendered bodies of the current time bucket, bounded in count and bytes."""

    def __init__(self, max_entries: int = 64, max_bytes: int = 512 * 1024 * 1024) -> None:
        self._entries: OrderedDict[tuple[int, str, str], Reply] = OrderedDict()
        self._bucket: int | None = None
        self._bytes = 0
        self._max_entries = max_entries
        self._max_bytes = max_bytes

    def get(self, key: tuple[int, str, str]) -> Reply | None:
        reply = self._entries.get(key)
        if reply is not None:
            self._entries.move_to_end(key)
        return reply

    def put(self, key: tuple[int, str, str], reply: Reply) -> None:
        if key[0] != self._bucket:
            self._entries.clear()
            self._bytes = 0
            self._bucket = key[0]
        self._entries[key] = reply
        self._bytes += len(reply.body)
        while len(self._entries) > self._max_entries or (
            self._bytes > self._max_bytes and len(self._entries) > 1
        ):
            _, old = self._entries.popitem(last=False)
            self._bytes -= len(old.body)
