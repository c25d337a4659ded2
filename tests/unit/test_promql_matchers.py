"""Label matchers (recorder.query.promql.matchers): fully anchored regexes, a missing label
as the empty value."""

from __future__ import annotations

import pytest

from recorder.errors import QueryError
from recorder.query.promql.matchers import Matcher, MatchOp, match_all


def test_regexes_are_fully_anchored() -> None:
    web = Matcher.of("pod", MatchOp.REGEX, "web")
    assert web.matches("web") and not web.matches("web-1") and not web.matches("aweb")
    assert Matcher.of("pod", MatchOp.REGEX, "web|db").matches("db")
    assert not Matcher.of("pod", MatchOp.NOT_REGEX, "web.*").matches("web-2")
    assert not Matcher.of("pod", MatchOp.REGEX, ".*").matches("a\nb")  # . is not \n, as in Go


def test_a_missing_label_is_the_empty_value() -> None:
    labels = (("a", "1"),)
    assert match_all([Matcher.of("b", MatchOp.EQUAL, "")], labels)
    assert not match_all([Matcher.of("b", MatchOp.NOT_EQUAL, "")], labels)
    assert match_all([Matcher.of("b", MatchOp.REGEX, "x|")], labels)
    assert Matcher.of("b", MatchOp.REGEX, ".*").matches_empty


def test_unicode_classes_are_ascii_as_in_re2() -> None:
    assert not Matcher.of("a", MatchOp.REGEX, r"\d").matches("٣")


def test_invalid_or_huge_patterns_are_query_errors() -> None:
    with pytest.raises(QueryError, match="invalid regular expression"):
        Matcher.of("a", MatchOp.REGEX, "(")
    with pytest.raises(QueryError, match="limited"):
        Matcher.of("a", MatchOp.REGEX, "a" * 40_000)
