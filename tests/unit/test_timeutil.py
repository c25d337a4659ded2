"""The one duration/time grammar: every form, its exactness, refusals that name what was typed,
and the CLI, the settings and the HTTP API parameters sharing it."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recorder import timeutil
from recorder.cli import build_parser, main
from recorder.errors import ConfigError, DurationError, QueryError
from recorder.query import params
from recorder.settings import load_settings
from recorder.timeutil import (
    DAY_MS,
    HOUR_MS,
    MAX_DURATION_MS,
    MINUTE_MS,
    SECOND_MS,
    WEEK_MS,
    format_duration,
    parse_duration_ms,
    parse_duration_seconds,
)

# --- the forms ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected_ms"),
    [
        ("30", 30 * SECOND_MS),
        ("0.5", 500),
        (".5", 500),
        ("15.", 15 * SECOND_MS),
        ("0", 0),
        ("500ms", 500),
        ("30s", 30 * SECOND_MS),
        ("5m", 5 * MINUTE_MS),
        ("1h", HOUR_MS),
        ("14d", 14 * DAY_MS),
        ("2w", 2 * WEEK_MS),
        ("1.5d", 36 * HOUR_MS),
        ("0.5h", 30 * MINUTE_MS),
        ("1.5s", 1500),
        ("10.043s", 10_043),
        ("1m30s", 90 * SECOND_MS),
        ("1h30m", 90 * MINUTE_MS),
        ("2d12h", 60 * HOUR_MS),
        ("1w2d3h4m5s6ms", WEEK_MS + 2 * DAY_MS + 3 * HOUR_MS + 4 * MINUTE_MS + 5006),
        ("1.5h30m", 2 * HOUR_MS),  # fractions in any part, as Go
        ("30s1m", 90 * SECOND_MS),  # any order, as Go
        ("  1m30s\n", 90 * SECOND_MS),
        ("0.0005s", 1),  # half a millisecond rounds up
        ("0.0004s", 0),
        ("000030s", 30 * SECOND_MS),
    ],
)
def test_durations(text: str, expected_ms: int) -> None:
    assert parse_duration_ms(text) == expected_ms


@pytest.mark.parametrize(
    ("text", "expected_seconds"),
    [("30", 30.0), ("0.5", 0.5), ("10.043s", 10.043), ("1.5d", 129_600.0), ("1ms", 0.001)],
)
def test_duration_seconds_are_the_nearest_float_to_the_exact_value(
    text: str, expected_seconds: float
) -> None:
    assert parse_duration_seconds(text) == expected_seconds


def test_a_third_of_a_second_is_the_float_nearest_a_third() -> None:
    assert parse_duration_seconds("0.333333333333333333333333333333s") == float(
        Fraction("0.333333333333333333333333333333")
    )


# --- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "it is empty"),
        ("   ", "it is empty"),
        ("1x", "unknown unit 'x'"),
        ("1y", "unknown unit 'y'"),
        ("1H", "unknown unit 'H'"),
        ("10us", "unknown unit 'us'"),
        ("10ns", "unknown unit 'ns'"),
        ("30 s", "unknown unit ' s'"),
        ("1m 30s", "unknown unit 'm '"),
        ("1e400", "unknown unit 'e'"),
        ("1e3", "unknown unit 'e'"),
        ("nan", "no number before 'nan'"),
        ("inf", "no number before 'inf'"),
        ("soon", "no number before 'soon'"),
        ("²d", "no number before '²d'"),
        ("٣s", "no number before '٣s'"),  # non-ASCII digits are not digits here
        ("1m30", "'30' has no unit"),
        ("1..5s", "'1..5' is not a number"),
        (".s", "'.' is not a number"),
        ("-5s", "has a sign"),
        ("-1", "has a sign"),
        ("+30s", "has a sign"),
        ("999999999999999999999999d", "longer than 2932896d"),
        ("9" * 5000, "longer than"),
        ("1" + "0" * 5000 + "w", "longer than"),
    ],
)
def test_refusals_name_what_was_typed(text: str, problem: str) -> None:
    for parse in (parse_duration_ms, parse_duration_seconds):
        with pytest.raises(DurationError) as caught:
            parse(text)
        assert caught.value.text == text
        assert problem in caught.value.problem
        assert str(caught.value).startswith(f"{text!r} is not a duration: ")


def test_syntax_refusals_show_the_forms_and_length_refusals_say_so() -> None:
    with pytest.raises(DurationError) as caught:
        parse_duration_ms("1x")
    assert timeutil.DURATION_FORMS in str(caught.value)
    assert not caught.value.too_long
    with pytest.raises(DurationError) as caught:
        parse_duration_ms("99999999w")
    assert caught.value.too_long


def test_the_longest_duration_is_accepted_and_one_more_millisecond_is_not() -> None:
    longest = format_duration(MAX_DURATION_MS)
    assert parse_duration_ms(longest) == MAX_DURATION_MS
    with pytest.raises(DurationError, match="longer than"):
        parse_duration_ms(format_duration(MAX_DURATION_MS + 1))


# --- format_duration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0s"),
        (1, "1ms"),
        (1500, "1s500ms"),
        (90 * SECOND_MS, "1m30s"),
        (60 * HOUR_MS, "2d12h"),
        (14 * DAY_MS, "14d"),
    ],
)
def test_format_duration(ms: int, text: str) -> None:
    assert format_duration(ms) == text


def test_format_duration_refuses_negative() -> None:
    with pytest.raises(ValueError, match="negative"):
        format_duration(-1)


# --- properties ---------------------------------------------------------------------------


@given(st.integers(min_value=0, max_value=MAX_DURATION_MS))
def test_any_duration_formatted_as_a_compound_parses_back_exactly(ms: int) -> None:
    assert parse_duration_ms(format_duration(ms)) == ms


@given(
    st.integers(min_value=0, max_value=10**6),
    st.integers(min_value=0, max_value=10**6),
    st.integers(min_value=0, max_value=10**6),
    st.integers(min_value=0, max_value=999),
)
def test_a_hand_spelled_compound_is_the_sum_of_its_parts(d: int, h: int, m: int, s: int) -> None:
    text = f"{d}d{h}h{m}m{s}s"
    assert parse_duration_ms(text) == d * DAY_MS + h * HOUR_MS + m * MINUTE_MS + s * SECOND_MS


UNITS = ["ms", "s", "m", "h", "d", "w"]


@given(
    st.decimals(min_value=0, max_value=10**5, places=3, allow_nan=False, allow_infinity=False),
    st.integers(min_value=0, max_value=len(UNITS) - 2),
)
def test_a_larger_unit_is_never_shorter(number: Decimal, index: int) -> None:
    text = f"{number:f}"
    smaller = parse_duration_ms(text + UNITS[index])
    larger = parse_duration_ms(text + UNITS[index + 1])
    assert smaller <= larger


@given(
    st.decimals(min_value=0, max_value=10**5, places=3, allow_nan=False, allow_infinity=False),
    st.decimals(min_value=0, max_value=10**5, places=3, allow_nan=False, allow_infinity=False),
    st.sampled_from(UNITS),
)
def test_more_of_a_unit_is_never_shorter(a: Decimal, b: Decimal, unit: str) -> None:
    low, high = sorted((a, b))
    assert parse_duration_ms(f"{low:f}{unit}") <= parse_duration_ms(f"{high:f}{unit}")


@given(
    st.one_of(
        st.text(max_size=30),
        st.from_regex(r"\A[-+ ]?[0-9]{0,40}(\.[0-9]{0,20})?(e[-+]?[0-9]{1,5})?\Z"),
        st.from_regex(r"\A([0-9]{0,30}(\.[0-9]{0,10})?(ns|us|ms|s|m|h|d|w|y|)){1,4}\Z"),
        st.sampled_from(["nan", "inf", "-inf", "1e400", "999999999999999999999999d", ""]),
    )
)
def test_any_text_is_a_bounded_duration_or_a_duration_error(text: str) -> None:
    try:
        ms = parse_duration_ms(text)
    except DurationError as exc:
        assert exc.text == text
        assert repr(text) in str(exc)
    else:
        assert isinstance(ms, int)
        assert 0 <= ms <= MAX_DURATION_MS
    try:
        seconds = parse_duration_seconds(text)
    except DurationError:
        pass
    else:
        assert 0 <= seconds <= MAX_DURATION_MS / SECOND_MS


# --- times (the relative ones use the duration grammar) -----------------------------------

NOW = 1_714_557_600_000  # 2024-05-01T10:00:00Z


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("-24h", NOW - DAY_MS),
        ("-1w", NOW - WEEK_MS),
        ("-1.5d", NOW - 36 * HOUR_MS),
        ("-1m30s", NOW - 90 * SECOND_MS),
        ("1714557600", NOW),
        ("2024-05-01T10:00:00Z", NOW),
    ],
)
def test_times(text: str, expected: int) -> None:
    assert timeutil.parse_time_ms(text, "start", NOW) == expected


def test_a_relative_time_that_is_no_duration_names_the_parameter_and_the_problem() -> None:
    with pytest.raises(QueryError) as caught:
        timeutil.parse_time_ms("-3x", "end", NOW)
    assert str(caught.value).startswith("end='-3x' is not RFC 3339")
    assert "unknown unit 'x'" in str(caught.value)


def test_now_ms_and_seconds_to_ms() -> None:
    assert timeutil.now_ms(lambda: 1714557600.1234) == 1_714_557_600_123
    assert timeutil.seconds_to_ms(1.5) == 1500
    assert timeutil.floor_to(NOW + 5, SECOND_MS) == NOW


# --- one grammar for the CLI, the settings and the HTTP API -------------------------------


def _cli_interval_ms(text: str) -> int:
    args = build_parser().parse_args(["poll", "--interval", text])
    return timeutil.seconds_to_ms(args.interval)


def _settings_interval_ms(text: str) -> int:
    return timeutil.seconds_to_ms(load_settings(interval_seconds=text).interval_seconds)


def _api_step_ms(text: str) -> int:
    step = params.parse_step_ms(text)
    assert step is not None
    return step


@pytest.mark.parametrize(
    ("text", "expected_ms"),
    [("1.5d", 36 * HOUR_MS), ("1m30s", 90 * SECOND_MS), ("2w", 2 * WEEK_MS), ("45", 45_000)],
)
def test_the_cli_the_settings_and_the_api_accept_the_same_durations(
    text: str, expected_ms: int
) -> None:
    assert _cli_interval_ms(text) == expected_ms
    assert _settings_interval_ms(text) == expected_ms
    assert _api_step_ms(text) == expected_ms
    assert params.parse_step_ms(text, name="--since") == expected_ms  # recorder top --since
    if not text.isdigit():  # -45 is a unix time (1969), so relative times need a unit
        assert timeutil.parse_time_ms(f"-{text}", "start", NOW) == NOW - expected_ms


def test_the_cli_refuses_1x_naming_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["poll", "--interval", "1x"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "argument --interval: '1x' is not a duration: unknown unit 'x'" in err


def test_the_cli_refuses_a_zero_interval_naming_the_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--interval", "0s"])
    assert "argument --interval: '0s' must be longer than zero" in capsys.readouterr().err


def test_query_takes_relative_times_after_a_space_and_names_the_flag(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'none.db'}"
    argv = ["query", "--resource", "cpu", "--database-url", url, "--step", "1h"]
    assert main([*argv, "--start", "-1x"]) == 2  # refused before any database is opened
    assert "recorder query: error: --start='-1x' is not" in capsys.readouterr().err
    assert main([*argv, "--start", "-1.5d", "--end", "-1x"]) == 2
    assert "error: --end='-1x' is not" in capsys.readouterr().err
    assert main([*argv, "--start", "-1.5d", "--step", "1x"]) == 2
    assert "error: --step='1x': unknown unit 'x'" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()


def test_top_since_refuses_1x_naming_the_flag() -> None:
    with pytest.raises(QueryError, match=r"^--since='1x': unknown unit 'x'"):
        params.parse_step_ms("1x", name="--since")


def test_the_settings_refuse_1x_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECORDER_FULL_RESOLUTION_RETENTION", "1x")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "RECORDER_FULL_RESOLUTION_RETENTION: " in str(caught.value)
    assert "'1x' is not a duration: unknown unit 'x'" in str(caught.value)


def test_a_setting_without_an_alias_is_named_by_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RECORDER_REQUEST_TIMEOUT_SECONDS", "1x")
    with pytest.raises(ConfigError, match="RECORDER_REQUEST_TIMEOUT_SECONDS: "):
        load_settings()


def test_the_api_refuses_1x_naming_the_parameter() -> None:
    with pytest.raises(QueryError, match=r"^step='1x': unknown unit 'x'"):
        params.parse_step_ms("1x")
    with pytest.raises(QueryError, match=r"^start='-1x' is not"):
        params.parse_range("-1x", None, now_ms=NOW, default_ms=1, max_range_ms=DAY_MS)


@pytest.mark.parametrize(
    ("variable", "field", "text", "seconds"),
    [
        ("RECORDER_INTERVAL", "interval_seconds", "1m30s", 90.0),
        ("RECORDER_BLOCK", "block_seconds", "1.5h", 5400.0),
        (
            "RECORDER_FULL_RESOLUTION_RETENTION",
            "full_resolution_retention_seconds",
            "1.5d",
            129_600.0,
        ),
        ("RECORDER_STATISTICS_RETENTION", "statistics_retention_seconds", "57w1d", 400 * 86_400.0),
        ("RECORDER_ROLLUP_RETENTION", "rollup_retention_seconds", "60w", 420 * 86_400.0),
        ("RECORDER_MAINTENANCE_INTERVAL", "maintenance_interval_seconds", "15m", 900.0),
        ("RECORDER_MAX_FUTURE_SKEW", "max_future_skew_seconds", "0", 0.0),
        ("RECORDER_SHUTDOWN_GRACE", "shutdown_grace_seconds", "25.5", 25.5),
        ("RECORDER_DATABASE_TIMEOUT", "database_timeout_seconds", "1m", 60.0),
        ("RECORDER_DATABASE_CONNECT_TIMEOUT", "database_connect_timeout_seconds", "500ms", 0.5),
        ("RECORDER_QUERY_QUEUE_TIMEOUT", "query_queue_timeout_seconds", "2s", 2.0),
        ("RECORDER_HTTP_HEADER_TIMEOUT", "http_header_timeout_seconds", "5s", 5.0),
        ("RECORDER_QUERY_MAX_RANGE", "query_max_range_seconds", "2w", 14 * 86_400.0),
        ("RECORDER_QUERY_TIMEOUT", "query_timeout_seconds", "45", 45.0),
        ("RECORDER_REQUEST_TIMEOUT_SECONDS", "request_timeout_seconds", "1m30s", 90.0),
    ],
)
def test_every_duration_setting_reads_the_grammar(
    variable: str, field: str, text: str, seconds: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, text)
    assert getattr(load_settings(), field) == seconds
    monkeypatch.setenv(variable, "1e400")
    with pytest.raises(ConfigError, match=f"{variable}: .*'1e400' is not a duration"):
        load_settings()


def test_the_simulator_reads_the_grammar_naming_the_flag() -> None:
    from recorder.simulator.options import options_from_args

    parser = build_parser()
    args = parser.parse_args(["simulate", "--resolution", "1m30s", "--slow", "1.5s"])
    assert args.resolution == 90.0
    assert options_from_args(args).faults.slow_seconds == 1.5
    bad = parser.parse_args(["simulate", "--faults-every", "1x"])
    with pytest.raises(ConfigError, match=r"^--faults-every: '1x' is not a duration"):
        options_from_args(bad)
