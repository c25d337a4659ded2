"""Kubernetes label and field selectors, parsed and matched the way the API server does.

Label selectors: ``key``, ``!key``, ``key=value``, ``key==value``, ``key!=value``,
``key in (a,b)``, ``key notin (a,b)``, ``key>1``, ``key<1``, joined by commas (AND).
Field selectors: ``field=value``, ``field==value``, ``field!=value`` joined by commas, with
backslash escapes, over the fields a resource supports (``metadata.name``, ``metadata.namespace``).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

from recorder.errors import QueryError

__all__ = [
    "FieldSelector",
    "LabelSelector",
    "SelectorError",
    "parse_field_selector",
    "parse_label_selector",
]

_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_INTEGER = re.compile(r"-?[0-9]+")

LabelOperator = Literal["exists", "!exists", "=", "!=", "in", "notin", "gt", "lt"]


class SelectorError(QueryError):
    """A selector could not be parsed; the message says what is wrong (HTTP 400)."""


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: LabelOperator
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        if op == "exists":
            return self.key in labels
        if op == "!exists":
            return self.key not in labels
        value = labels.get(self.key)
        if op in ("=", "in"):
            return value is not None and value in self.values
        if op in ("!=", "notin"):
            return value is None or value not in self.values
        if value is None or not _INTEGER.fullmatch(value):
            return False
        (bound,) = self.values
        return int(value) > int(bound) if op == "gt" else int(value) < int(bound)


@dataclass(frozen=True, slots=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements


_TOKEN = re.compile(r"\s*(?:(?P<op>==|!=|=|!|\(|\)|,|<|>)|(?P<word>[^\s=!(),<>]+))")


def _tokens(text: str) -> Iterator[str]:
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            break  # only trailing whitespace is left
        pos = match.end()
        token = match.group("op") or match.group("word")
        if token is None:
            break
        yield token


def _check_key(key: str) -> str:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        raise SelectorError(
            f"invalid label key {key!r}: the prefix must be a DNS subdomain (e.g. 'example.com')"
        )
    if not _NAME.fullmatch(name):
        raise SelectorError(
            f"invalid label key {key!r}: a name must be 63 characters or less, begin and end "
            "with an alphanumeric character and contain only '-', '_', '.' or alphanumerics"
        )
    return key


def _check_value(value: str) -> str:
    if value and not _NAME.fullmatch(value):
        raise SelectorError(
            f"invalid label value {value!r}: must be 63 characters or less, empty or begin and "
            "end with an alphanumeric character and contain only '-', '_', '.' or alphanumerics"
        )
    return value


class _LabelParser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = list(_tokens(text))
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str | None:
        token = self.peek()
        self.pos += 1
        return token

    def fail(self, found: str | None, expected: str) -> SelectorError:
        return SelectorError(
            f"unable to parse requirement: found {found or 'end of selector'!r}, "
            f"expected {expected} (in label selector {self.text!r})"
        )

    def value(self) -> str:
        token = self.peek()
        if token is None or token in (",", ")"):
            return ""  # `key=` selects the empty value
        if token in ("==", "!=", "=", "!", "(", "<", ">"):
            raise self.fail(token, "a value")
        self.pos += 1
        return _check_value(token)

    def values(self) -> frozenset[str]:
        if (token := self.take()) != "(":
            raise self.fail(token, "'('")
        values = [self.value()]
        while (token := self.take()) == ",":
            values.append(self.value())
        if token != ")":
            raise self.fail(token, "',' or ')'")
        if values == [""]:
            raise SelectorError(
                f"for 'in' and 'notin' the set of values cannot be empty ({self.text!r})"
            )
        return frozenset(values)

    def requirement(self) -> Requirement:
        token = self.take()
        if token == "!":
            key = self.take()
            if key is None or key in ("==", "!=", "=", "!", "(", ")", ",", "<", ">"):
                raise self.fail(key, "a label key after '!'")
            return Requirement(_check_key(key), "!exists")
        if token is None or token in ("==", "!=", "=", "(", ")", ",", "<", ">"):
            raise self.fail(token, "a label key")
        key = _check_key(token)
        op = self.peek()
        if op is None or op == ",":
            return Requirement(key, "exists")
        self.pos += 1
        if op in ("=", "=="):
            return Requirement(key, "=", frozenset((self.value(),)))
        if op == "!=":
            return Requirement(key, "!=", frozenset((self.value(),)))
        if op == "in":
            return Requirement(key, "in", self.values())
        if op == "notin":
            return Requirement(key, "notin", self.values())
        if op in ("<", ">"):
            bound = self.take()
            if bound is None or not _INTEGER.fullmatch(bound):
                raise self.fail(bound, f"an integer after {op!r}")
            return Requirement(key, "gt" if op == ">" else "lt", frozenset((bound,)))
        raise self.fail(op, "'=', '==', '!=', 'in', 'notin', '<', '>' or ','")

    def parse(self) -> LabelSelector:
        if self.peek() is None:
            return LabelSelector()
        requirements = [self.requirement()]
        while (token := self.take()) == ",":
            requirements.append(self.requirement())
        if token is not None:
            raise self.fail(token, "','")
        return LabelSelector(tuple(requirements))


def parse_label_selector(text: str) -> LabelSelector:
    """Parse a ``labelSelector`` query parameter; raises `SelectorError`."""
    return _LabelParser(text).parse()


FieldOperator = Literal["=", "!="]


@dataclass(frozen=True, slots=True)
class FieldSelector:
    terms: tuple[tuple[str, FieldOperator, str], ...] = ()

    def matches(self, fields: Mapping[str, str]) -> bool:
        """``fields`` maps each supported field path to the object's value."""
        for field, op, value in self.terms:
            if (fields[field] == value) != (op == "="):
                return False
        return True

    def values(self, field: str) -> set[str]:
        """The values ``field`` must equal (for a fast lookup), empty when unconstrained."""
        return {v for f, op, v in self.terms if f == field and op == "="}

    @property
    def empty(self) -> bool:
        return not self.terms


def _split_unescaped(text: str, separator: str) -> list[str]:
    parts, current, escaped = [], [], False
    for ch in text:
        if escaped:
            current.append("\\" + ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if escaped:
        current.append("\\")
    parts.append("".join(current))
    return parts


def _unescape(text: str, whole: str) -> str:
    out, escaped = [], False
    for ch in text:
        if escaped:
            if ch not in "\\,=!":
                raise SelectorError(f"invalid field selector {whole!r}: invalid escape '\\{ch}'")
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in ",=":
            raise SelectorError(f"invalid field selector {whole!r}: unescaped {ch!r}")
        else:
            out.append(ch)
    if escaped:
        raise SelectorError(f"invalid field selector {whole!r}: dangling '\\'")
    return "".join(out)


def _split_term(term: str) -> tuple[str, FieldOperator, str] | None:
    escaped = False
    for i, ch in enumerate(term):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "!" and term[i + 1 : i + 2] == "=":
            return term[:i], "!=", term[i + 2 :]
        elif ch == "=":
            rest = term[i + 2 :] if term[i + 1 : i + 2] == "=" else term[i + 1 :]
            return term[:i], "=", rest
    return None


def parse_field_selector(text: str, supported: Collection[str]) -> FieldSelector:
    """Parse a ``fieldSelector``; fields outside ``supported`` are rejected like the API does."""
    if not text.strip():
        return FieldSelector()
    terms: list[tuple[str, FieldOperator, str]] = []
    for term in _split_unescaped(text, ","):
        split = _split_term(term)
        if split is None:
            raise SelectorError(f"invalid selector: {text!r}; can't understand {term!r}")
        field, op, raw = split
        field = field.strip()
        if field not in supported:
            raise SelectorError(f'field label not supported: "{field}"')
        terms.append((field, op, _unescape(raw, text)))
    return FieldSelector(tuple(terms))
