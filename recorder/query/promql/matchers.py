"""Label matchers (``=``, ``!=``, ``=~``, ``!~``) as Prometheus applies them.

Regular expressions are fully anchored, as in Prometheus (``^(?:re)$``); they are checked by
the parser (Rust's ``regex`` crate, RE2 syntax like Go's) and run by Python's ``re`` with
``fullmatch``. The two agree on the syntax both accept; Python's ``re`` differs from RE2 in
exotic corners (possessive quantifiers, lookarounds and backreferences are refused by the
parser already; ``\\d`` and ``\\w`` match non-ASCII digits and letters in Python only), so
such patterns are refused here rather than answered differently: Unicode classes are run
with ``re.ASCII``, and ``.`` does not match a newline (Go's default,
which Prometheus 2.42 keeps). A label that a series lacks has the value ``""``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from recorder.errors import QueryError
from recorder.query.promql.values import Labels, label_value

MAX_PATTERN_CHARS = 32_768


class MatchOp(StrEnum):
    EQUAL = "="
    NOT_EQUAL = "!="
    REGEX = "=~"
    NOT_REGEX = "!~"


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    op: MatchOp
    value: str
    pattern: re.Pattern[str] | None = None

    @classmethod
    def of(cls, name: str, op: MatchOp, value: str) -> Matcher:
        pattern = None
        if op in (MatchOp.REGEX, MatchOp.NOT_REGEX):
            pattern = compile_anchored(value, f"{name}{op.value}{value[:80]!r}")
        return cls(name, op, value, pattern)

    def matches(self, value: str) -> bool:
        if self.op is MatchOp.EQUAL:
            return value == self.value
        if self.op is MatchOp.NOT_EQUAL:
            return value != self.value
        assert self.pattern is not None
        found = self.pattern.fullmatch(value) is not None
        return found if self.op is MatchOp.REGEX else not found

    @property
    def matches_empty(self) -> bool:
        return self.matches("")

    def __str__(self) -> str:
        return f'{self.name}{self.op.value}"{self.value}"'


def compile_anchored(text: str, where: str) -> re.Pattern[str]:
    """``text`` as a fully anchored regular expression; ``QueryError`` naming ``where``."""
    if len(text) > MAX_PATTERN_CHARS:
        raise QueryError(f"{where}: regular expressions are limited to {MAX_PATTERN_CHARS} chars")
    try:
        return re.compile(f"(?:{text})", re.ASCII)
    except (re.error, RecursionError, OverflowError) as exc:
        raise QueryError(f"{where}: invalid regular expression: {exc}") from None


def match_all(matchers: Sequence[Matcher], labels: Labels) -> bool:
    return all(m.matches(label_value(labels, m.name)) for m in matchers)
