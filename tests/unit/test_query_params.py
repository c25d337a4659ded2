"""Query parameters: every input is a value the store can use or a QueryError naming it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recorder.domain import QueryKind
from recorder.errors import QueryError
from recorder.query.params import (
    MAX_STEP_MS,
    MIN_STEP_MS,
    parse_group_by,
    parse_range,
    parse_selector,
    parse_step_ms,
    parse_time_ms,
)
from recorder.timeutil import DAY_MS, MAX_TIME_MS, MIN_TIME_MS
from tests.strategies import rfc3339_like

NOW = 1_714_557_600_000  # 2024-05-01T10:00:00Z
DAY = DAY_MS


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T10:00:00Z", NOW),
        ("2024-05-01T10:00:00z", NOW),
        ("2024-05-01T12:00:00+02:00", NOW),
        ("2024-05-01T10:00:00.0005Z", NOW + 1),  # to the nearest millisecond
        ("2024-05-01T10:00:00.123456Z", NOW + 123),
        ("1970-01-01T00:00:00Z", 0),
        ("9999-12-31T23:59:59.999Z", MAX_TIME_MS),
        ("1714557600", NOW),
        ("1714557600.25", NOW + 250),
        (" 1714557600 ", NOW),
        ("0", 0),
        ("now", NOW),
        ("-1h", NOW - 3_600_000),
        ("-90m", NOW - 90 * 60_000),
        ("-1.5d", NOW - 36 * 3_600_000),
        ("-1w", NOW - 7 * DAY),
        ("-500ms", NOW - 500),
        ("-0s", NOW),
        ("-1m30s", NOW - 90_000),
        ("-2d12h", NOW - 60 * 3_600_000),
        ("-.5h", NOW - 1_800_000),
        (" -24h ", NOW - DAY),
    ],
)
def test_times(text: str, expected: int) -> None:
    assert parse_time_ms(text, "start", NOW) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # issue 10, row 11: both were HTTP 500
        ("9999-12-31T23:59:59-23:59", "out of range"),
        ("-99999999999999999999999999999999999w", "too far back"),
        ("0001-01-01T00:00:00+23:59", "out of range"),
        ("1969-12-31T23:59:59Z", "out of range"),
        ("-60000w", "out of range"),  # before 1970
        ("-" + "9" * 400 + "s", "too far back"),  # float() gives inf
        ("1e300", "out of range"),
        ("-1", "out of range"),
        ("253402300800", "out of range"),  # 10000-01-01
        ("nan", "out of range"),
        ("inf", "out of range"),
        ("-inf", "out of range"),
        ("2024-05-01T10:00:00", "time zone"),
        ("2024-05-01", "time zone"),
        ("2024-13-45T99:99:99Z", "not RFC 3339"),
        ("0000-01-01T00:00:00Z", "not RFC 3339"),
        ("2024-05-01T10:00:00+24:00", "not RFC 3339"),
        ("yesterday", "not RFC 3339"),
        ("-5x", "not RFC 3339"),
        ("-5x", "unknown unit 'x'"),
        ("-1m30", "'30' has no unit"),
        ("-", "it is empty"),
        ("--1h", "has a sign"),
        ("+1h", "not RFC 3339"),
        ("-٣h", "not RFC 3339"),  # non-ASCII digits are no relative time
        ("\x00", "not RFC 3339"),
        ("", "not RFC 3339"),
    ],
)
def test_bad_times_name_the_parameter(text: str, message: str) -> None:
    with pytest.raises(QueryError, match=message) as caught:
        parse_time_ms(text, "end", NOW)
    assert str(caught.value).startswith(f"end={text!r}")


hostile_times = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"\A[-+]?[0-9]{1,40}(\.[0-9]{0,20})?(e[-+]?[0-9]{1,5})?\Z"),
    st.from_regex(r"\A-[0-9]{1,38}(\.[0-9]{1,5})?(ms|s|m|h|d|w)\Z"),
    rfc3339_like(),
)


@given(hostile_times)
def test_any_time_is_in_range_or_a_query_error(text: str) -> None:
    try:
        value = parse_time_ms(text, "start", NOW)
    except QueryError as exc:
        assert str(exc).startswith(f"start={text!r}")
    else:
        assert isinstance(value, int)
        assert MIN_TIME_MS <= value <= MAX_TIME_MS


def test_ranges() -> None:
    assert parse_range(None, None, now_ms=NOW, default_ms=3_600_000, max_range_ms=DAY) == (
        NOW - 3_600_000,
        NOW,
    )
    assert parse_range("-2h", "-1h", now_ms=NOW, default_ms=1, max_range_ms=DAY) == (
        NOW - 7_200_000,
        NOW - 3_600_000,
    )
    # a default start before 1970 is 1970
    assert parse_range(None, "1", now_ms=NOW, default_ms=DAY, max_range_ms=DAY) == (0, 1000)
    with pytest.raises(QueryError, match="start must not be after end"):
        parse_range("10", "5", now_ms=NOW, default_ms=1, max_range_ms=DAY)
    with pytest.raises(QueryError, match="longer than the maximum of 1 days"):
        parse_range("0", "now", now_ms=NOW, default_ms=1, max_range_ms=DAY)


def test_ranges_name_their_parameters_as_the_caller_calls_them() -> None:
    names = ("--start", "--end")
    with pytest.raises(QueryError, match="--start must not be after --end"):
        parse_range("10", "5", now_ms=NOW, default_ms=1, max_range_ms=DAY, names=names)
    with pytest.raises(QueryError) as caught:
        parse_range("-1x", None, now_ms=NOW, default_ms=1, max_range_ms=DAY, names=names)
    assert str(caught.value).startswith("--start='-1x'")
    with pytest.raises(QueryError) as caught:
        parse_range(None, "yesterday", now_ms=NOW, default_ms=1, max_range_ms=DAY, names=names)
    assert str(caught.value).startswith("--end='yesterday'")


@given(st.one_of(st.none(), hostile_times), st.one_of(st.none(), hostile_times))
def test_any_range_is_ordered_bounded_and_in_range_or_a_query_error(
    start: str | None, end: str | None
) -> None:
    try:
        start_ms, end_ms = parse_range(start, end, now_ms=NOW, default_ms=DAY, max_range_ms=DAY)
    except QueryError:
        return
    assert MIN_TIME_MS <= start_ms <= end_ms <= MAX_TIME_MS
    assert end_ms - start_ms <= DAY


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, None),
        ("", None),
        ("30s", 30_000),
        ("5m", 300_000),
        ("1h30m", 5_400_000),
        ("1d", DAY),
        ("400d", 400 * DAY),
        ("300", 300_000),
        ("1.5", 1500),
        (" 1h ", 3_600_000),
        ("1.5d", 36 * 3_600_000),
        ("1m30s", 90_000),
        ("2w", 14 * DAY),
        ("2d12h", 60 * 3_600_000),
        ("1.0005s", 1001),  # half a millisecond rounds up
        ("57w1d", 400 * DAY),
    ],
)
def test_steps(text: str | None, expected: int | None) -> None:
    assert parse_step_ms(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0s", "shorter than 1s"),
        ("0", "shorter than 1s"),
        ("-5s", "has a sign"),
        ("+5s", "has a sign"),
        ("500ms", "shorter than 1s"),
        ("0d", "shorter than 1s"),
        ("0.5", "shorter than 1s"),
        ("0.9994s", "shorter than 1s"),  # rounds to 999 ms
        ("401d", "longer than the longest range"),
        ("57w2d", "longer than the longest range"),
        ("99999999999999999999", "longer than the longest range"),
        ("9999999999999999999d", "longer than the longest range"),
        ("9999999999999999999h", "longer than the longest range"),
        ("2562047h", "longer than the longest range"),
        ("1" + "0" * 5000 + "s", "longer than the longest range"),
        ("²d", "no number before '²d'"),  # str.isdigit() is true for '²', int() is not
        ("1y", "unknown unit 'y'"),
        ("1x", "unknown unit 'x'"),
        ("1e400", "unknown unit 'e'"),
        ("1m30", "'30' has no unit"),
        ("1..5h", "'1..5' is not a number"),
        ("1 h", "unknown unit ' h'"),
        ("1H", "unknown unit 'H'"),
        ("10us", "unknown unit 'us'"),
        ("nan", "no number before 'nan'"),
        ("inf", "no number before 'inf'"),
        ("  ", "it is empty"),
    ],
)
def test_bad_steps_name_the_parameter(text: str, message: str) -> None:
    with pytest.raises(QueryError, match=message) as caught:
        parse_step_ms(text)
    assert str(caught.value).startswith(f"step={text!r}")


def test_a_step_is_named_as_the_caller_calls_it() -> None:
    with pytest.raises(QueryError) as caught:
        parse_step_ms("1x", name="--since")
    assert str(caught.value).startswith("--since='1x': unknown unit 'x'")
    assert parse_step_ms("2w", name="--since") == 14 * DAY


def test_the_default_longest_step_is_the_default_longest_range() -> None:
    assert MAX_STEP_MS == 400 * DAY
    assert parse_step_ms("400d") == MAX_STEP_MS


def test_the_longest_step_is_the_longest_range() -> None:
    assert parse_step_ms("2d", max_ms=2 * DAY) == 2 * DAY
    with pytest.raises(QueryError, match=r"\(172800s\)"):
        parse_step_ms("3d", max_ms=2 * DAY)


@given(
    st.one_of(
        st.text(max_size=20),
        st.from_regex(r"\A[-+]?[0-9]{0,25}(\.[0-9]{0,10})?(ns|us|µs|ms|s|m|h|d|w|)+\Z"),
    )
)
def test_any_step_is_bounded_or_a_query_error(text: str) -> None:
    try:
        step = parse_step_ms(text, max_ms=DAY)
    except QueryError as exc:
        assert str(exc).startswith(f"step={text!r}")
    else:
        assert step is None or MIN_STEP_MS <= step <= DAY


def test_selectors() -> None:
    assert parse_selector(None) is None
    assert parse_selector("  ") is None
    selector = parse_selector("app=web,tier!=db")
    assert selector is not None and selector.matches({"app": "web"})
    with pytest.raises(QueryError, match="selector"):
        parse_selector("app in (a")


@given(st.text(max_size=200))
def test_any_selector_parses_or_is_a_query_error(text: str) -> None:
    try:
        parse_selector(text)
    except QueryError:
        pass


@pytest.mark.parametrize(
    "text",
    ["namespace", "pod", "container", "node", "label:app", "label:app.kubernetes.io/name"],
)
def test_group_by(text: str) -> None:
    assert parse_group_by(text) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Namespace",
        "label:",
        "label: app",
        "label:app=web",
        "label:!app",
        "label:a,b",
        "label:-app",
        "label:" + "a" * 64,
        "label:Example.com/app",
        "label:app\x00",
        "workloads",
    ],
)
def test_bad_group_by_names_the_parameter(text: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse_group_by(text)
    assert str(caught.value).startswith(f"group_by={text!r}")


@pytest.mark.parametrize(
    ("group_by", "kind", "problem"),
    [
        ("node", QueryKind.CONTAINER, "group_by=node goes with kind=node"),
        ("namespace", QueryKind.NODE, "group_by=node goes with kind=node"),
        ("container", QueryKind.POD, "group_by=container goes with kind=container"),
        ("workload", QueryKind.NODE, "group_by=workload goes with kind=pod or kind=container"),
        ("pod", QueryKind.WORKLOAD, "use kind=pod or kind=container with group_by=workload"),
    ],
)
def test_a_grouping_must_fit_the_kind(group_by: str, kind: QueryKind, problem: str) -> None:
    with pytest.raises(QueryError, match=problem):
        parse_group_by(group_by, kind)


@pytest.mark.parametrize(
    ("group_by", "kind"),
    [
        ("node", QueryKind.NODE),
        ("cluster", QueryKind.NODE),
        ("cluster", QueryKind.POD),
        ("pod", QueryKind.POD),
        ("label:app", QueryKind.CONTAINER),
        ("workload", QueryKind.POD),
        ("workload", QueryKind.CONTAINER),
    ],
)
def test_groupings_that_fit_their_kind(group_by: str, kind: QueryKind) -> None:
    assert parse_group_by(group_by, kind) == group_by


@given(st.integers(MIN_TIME_MS, MAX_TIME_MS - 10 * DAY_MS), st.integers(0, 9 * DAY_MS))
def test_windows_of_two_days_or_more_snap_to_whole_days(start: int, length: int) -> None:
    from recorder.query.params import SNAP_FROM_MS, day_window

    window = day_window(start, start + length)
    assert (window.asked_start_ms, window.asked_end_ms) == (start, start + length)
    if length < SNAP_FROM_MS:
        assert (window.start_ms, window.end_ms) == (start, start + length)
        assert not window.snapped
        return
    assert window.start_ms % DAY_MS == 0 and (window.end_ms + 1) % DAY_MS == 0
    assert 0 <= start + length - window.end_ms <= DAY_MS  # ends at the last midnight
    if window.start_ms > MIN_TIME_MS:  # as many days as the window is long, rounded up
        assert window.end_ms + 1 - window.start_ms == -(-length // DAY_MS) * DAY_MS
    whole_days = start % DAY_MS == 0 and (start + length + 1) % DAY_MS == 0
    assert window.snapped != whole_days
