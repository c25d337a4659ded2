"""``--auth tokens``: static bearer tokens from a file (a mounted Secret), read again when it
changes.

The file holds one token a line; blank lines and lines starting with ``#`` are skipped::

    TOKEN[,NAME[,SCOPE]]

- ``TOKEN``: at least 16 characters, no spaces or commas (``openssl rand -hex 32``);
- ``NAME``: who holds it, as logs and the rate limit know the caller (default ``line-N``);
- ``SCOPE``: ``*`` (everything: every namespace, the nodes, ``/metrics``; the default), or a
  ``;``-separated list of namespaces and ``/metrics`` (the exposition alone, for Prometheus),
  e.g. ``team-a;team-b`` or ``/metrics``.

Only SHA-256 digests of the tokens are kept, and a presented token is compared with every one
of them in constant time. A file that cannot be read or parsed at start is a ``ConfigError``
(its message names the line, never a token); later, the tokens in force stay as they were and
the problem is logged until the file is fixed.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from recorder.api.access import AuthMode, Caller, KnownNamespaces, Question, Scope
from recorder.errors import ConfigError

__all__ = ["TokenAccess", "TokenGrant", "parse_tokens"]

log = logging.getLogger(__name__)

MIN_TOKEN_CHARS = 16
METRICS_ENTRY = "/metrics"
EVERYTHING = "*"
_TOKEN = re.compile(r"[^\s,]+\Z")
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
_NAME = re.compile(r"[^\s,]{1,253}\Z")
RECHECK_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """One line of the file: its token's digest, its holder and what it may read."""

    digest: bytes
    name: str
    everything: bool
    namespaces: frozenset[str]
    metrics: bool

    def allows(self, question: Question) -> bool:
        if self.everything:
            return True
        if question.scope is Scope.NAMESPACE:
            return question.namespace in self.namespaces
        return question.scope is Scope.METRICS and self.metrics


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_tokens(text: str, source: str) -> tuple[TokenGrant, ...]:
    """The grants of a token file's ``text``; a ``ConfigError`` naming ``source`` and the line
    (never the token) for the first malformed one."""
    grants: list[TokenGrant] = []
    names: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        token, _, rest = line.partition(",")
        name, _, scope = rest.partition(",")
        token, name, scope = token.strip(), name.strip() or f"line-{number}", scope.strip()

        def problem(what: str, line_number: int = number) -> ConfigError:
            return ConfigError(f"{source}, line {line_number}: {what}")

        if _TOKEN.match(token) is None or len(token) < MIN_TOKEN_CHARS:
            raise problem(
                f"the token must be at least {MIN_TOKEN_CHARS} characters without spaces or "
                "commas (e.g. from `openssl rand -hex 32`)"
            )
        if _NAME.match(name) is None:
            raise problem(f"the name {name[:60]!r} may hold no spaces")
        if name in names:
            raise problem(f"the name {name!r} is given twice: give each token its own")
        names.add(name)
        entries = [e.strip() for e in (scope or EVERYTHING).split(";") if e.strip()]
        for entry in entries:
            if entry not in (EVERYTHING, METRICS_ENTRY) and _NAMESPACE.match(entry) is None:
                raise problem(
                    f"{entry[:70]!r} is neither *, /metrics nor a namespace name; the scope is "
                    "* or entries separated by ';', e.g. team-a;team-b"
                )
        grants.append(
            TokenGrant(
                _digest(token),
                name,
                EVERYTHING in entries,
                frozenset(e for e in entries if e not in (EVERYTHING, METRICS_ENTRY)),
                METRICS_ENTRY in entries,
            )
        )
    return tuple(grants)


class TokenAccess:
    """The grants of ``path``, read again (at most every second) when the file changes."""

    mode = AuthMode.TOKENS

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._checked = clock()
        self._stamp = self._stat()
        self._grants = self._read()
        if not self._grants:
            log.warning("%s holds no token: every read is refused (401)", path)
        self._failing: str | None = None

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _read(self) -> tuple[TokenGrant, ...]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"cannot read the token file {self.path}: {getattr(exc, 'strerror', None) or exc}"
            ) from None
        return parse_tokens(text, str(self.path))

    def _refresh(self) -> None:
        now = self._clock()
        if now - self._checked < RECHECK_SECONDS:
            return
        self._checked = now
        stamp = self._stat()
        if stamp == self._stamp:
            return
        try:
            grants = self._read()
        except ConfigError as exc:
            if str(exc) != self._failing:
                self._failing = str(exc)
                log.error("the token file changed but was not taken, old tokens stay: %s", exc)
            return
        self._stamp, self._grants, self._failing = stamp, grants, None
        log.info("read %d token(s) from %s", len(grants), self.path)

    def grant_of(self, token: str) -> TokenGrant | None:
        self._refresh()
        presented = _digest(token)
        found: TokenGrant | None = None
        for grant in self._grants:  # every one compared: the time says nothing of which
            if hmac.compare_digest(presented, grant.digest):
                found = grant
        return found

    async def authenticate(self, token: str | None) -> Caller | None:
        if not token:
            return None
        grant = self.grant_of(token)
        return None if grant is None else Caller(grant.name)

    def _grant_named(self, name: str) -> TokenGrant | None:
        return next((g for g in self._grants if g.name == name), None)

    async def allows(self, caller: Caller, question: Question) -> bool:
        grant = self._grant_named(caller.name) if caller.authenticated else None
        return grant is not None and grant.allows(question)

    async def readable(self, caller: Caller, known: KnownNamespaces) -> frozenset[str]:
        grant = self._grant_named(caller.name) if caller.authenticated else None
        return grant.namespaces if grant is not None else frozenset()

    def costly(self, token: str) -> bool:
        return False  # a digest and a few comparisons
