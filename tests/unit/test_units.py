"""Tests for recorder.units: Kubernetes quantities, Go durations and kubectl-style printing.

Expected values come from reading the Go sources named in ``recorder/units.py``; the shared
fixture vectors come from apimachinery's own quantity tests.
"""

from __future__ import annotations

import ast
import json
import sys
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from recorder import units
from recorder.errors import DecodeError, QuantityError

VECTORS_PATH = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "quantity_vectors.json"
VECTORS: list[dict[str, Any]] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))

NANO = Fraction(1, 10**9)
INT64_MAX = 2**63 - 1
MICRO_SIGN = "\u00b5"  # what Go's Duration.String prints
GREEK_MU = "\u03bc"

DECIMAL_SUFFIXES = {
    "n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18,
}  # fmt: skip
BINARY_SUFFIXES = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
EXPONENT_SUFFIXES = {"e3": 3, "E-3": -3, "e+2": 2, "e-12": -12, "E0": 0}
DURATION_UNITS = {
    "ns": 1, "us": 10**3, MICRO_SIGN + "s": 10**3, GREEK_MU + "s": 10**3, "ms": 10**6,
    "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9,
}  # fmt: skip


def _is_json_quoted(vector: dict[str, Any]) -> bool:
    text: str = vector["input"]
    return len(text) >= 2 and text[0] == text[-1] == '"'


def _ids(vectors: list[dict[str, Any]]) -> list[str]:
    return [repr(vector["input"]) for vector in vectors]


PLAIN_VECTORS = [vector for vector in VECTORS if not _is_json_quoted(vector)]
JSON_QUOTED_VECTORS = [vector for vector in VECTORS if _is_json_quoted(vector)]


def _away_from_zero(value: Fraction) -> int:
    magnitude = -(-abs(value.numerator) // value.denominator)
    return -magnitude if value < 0 else magnitude


# --- the shared fixture vectors -------------------------------------------------------------


def test_fixture_file_is_loaded() -> None:
    assert len(VECTORS) > 250
    assert any(vector.get("derived") for vector in VECTORS)


@pytest.mark.parametrize("vector", PLAIN_VECTORS, ids=_ids(PLAIN_VECTORS))
def test_fixture_vector(vector: dict[str, Any]) -> None:
    if vector["valid"]:
        assert units.parse_quantity(vector["input"]) == Fraction(Decimal(vector["value"]))
    else:
        with pytest.raises(QuantityError):
            units.parse_quantity(vector["input"])


# The fixture marks '"1 "' and '" 1"' (quotes included) valid. They come from Go's JSON tests:
# Quantity.UnmarshalJSON (quantity.go) strips the quotes and calls strings.TrimSpace before
# ParseQuantity, and ParseQuantity itself rejects both (a quote is not a digit or a suffix).
# parse_quantity is ParseQuantity, so it rejects them; the JSON path gives the fixture's value.
@pytest.mark.parametrize("vector", JSON_QUOTED_VECTORS, ids=_ids(JSON_QUOTED_VECTORS))
def test_fixture_vector_from_go_json_decoding(vector: dict[str, Any]) -> None:
    with pytest.raises(QuantityError):
        units.parse_quantity(vector["input"])
    unquoted = vector["input"][1:-1].strip()
    assert units.parse_quantity(unquoted) == Fraction(Decimal(vector["value"]))


# --- parse_quantity: Go's rules beyond the fixture ------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("m", 0),  # no digits: Go's fast path reads the empty numerator as 0
        ("Ki", 0),
        ("Ti", 0),
        (".e5", 0),
        ("0e-10", 0),
        ("0e99999999", 0),
        ("1e4294967296", 1),  # Go keeps int32(parsed): 2^32 becomes 0
        ("0.5n", NANO),  # finer than 1n: rounded away from zero
        ("-0.5n", -NANO),
        ("1e-1000", NANO),
        ("123456789012e-20", 2 * NANO),
        ("1.5Ki", 1536),
        ("-0.001Ki", Fraction(-1024, 1000)),
        ("8Ei", INT64_MAX),  # binary values are capped at 2^63-1
        ("-8Ei", -INT64_MAX),
        ("1e1000", 10**1000),
    ],
    ids=repr,
)
def test_go_parse_rules(text: str, expected: Fraction | int) -> None:
    assert units.parse_quantity(text) == expected


def test_long_digit_strings_are_exact() -> None:
    assert units.parse_quantity("1" * 5000) == Fraction(Decimal("1" * 5000))
    assert units.parse_quantity("0." + "0" * 4990 + "1") == NANO


@pytest.mark.parametrize(
    "text",
    [
        "Pi",  # no digits, and Go's slow path (inf.Dec) needs one
        "-Ei",
        ".Ei",
        "e-10",
        "-.e-10",
        "1e",
        "1E-",
        "1e+",
        "1ee3",
        "1e9223372036854775808",  # strconv.ParseInt fails
        "1e1001",  # above MAX_DECIMAL_EXPONENT
        "1e-2147483648",  # Go's int32 scale arithmetic wraps
        "1e-2147483649",  # int32 wraps to 2147483647: above MAX_DECIMAL_EXPONENT
        "1K",
        "1ki",
        "1KiB",
        "1k ",
        "\t1",
        "1\n",
        "\uff11",  # FULLWIDTH DIGIT ONE
        "1" + MICRO_SIGN,
        "1e3.5",
        "+-1",
        "1.5.",
        "..5",
    ],
    ids=repr,
)
def test_rejected_quantities(text: str) -> None:
    with pytest.raises(QuantityError):
        units.parse_quantity(text)


def test_quantity_error_names_the_input_and_a_valid_form() -> None:
    with pytest.raises(QuantityError) as caught:
        units.parse_quantity("1KiB")
    assert isinstance(caught.value, DecodeError)
    assert isinstance(caught.value, ValueError)
    assert "'1KiB'" in str(caught.value)
    assert "512Mi" in str(caught.value)


# --- cpu_nanocores / memory_bytes ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.1m", 100_000),
        ("1.5Gi", 1_610_612_736 * 10**9),
        ("487558164n", 487_558_164),
        ("7338891n", 7_338_891),
        ("12436m", 12_436_000_000),
        ("250m", 250_000_000),
        ("1", 10**9),
        ("0", 0),
        ("1n", 1),
        ("0.5n", 1),
        ("-0.5n", -1),
        ("1.1E-9", 2),
        ("-1.1E-9", -2),
        ("1E", 10**27),
        ("9Ei", INT64_MAX * 10**9),
    ],
    ids=repr,
)
def test_cpu_nanocores(text: str, expected: int) -> None:
    assert units.cpu_nanocores(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("732212Ki", 749_785_088),
        ("14520Ki", 14_868_480),
        ("1.5Gi", 1_610_612_736),
        ("3749752832", 3_749_752_832),
        ("0", 0),
        ("0.5n", 1),
        ("0.5", 1),
        ("1.5", 2),
        ("1001m", 2),
        ("-1.5", -2),  # Go: int64Amount, negativeScaleInt64 rounds away from zero
        ("-1500m", -2),
        # Go's Value() gives 0 here: the quantity is held as inf.Dec and scaledValue
        # (scale_int.go) truncates toward zero, then adds one. We round away from zero, as Go
        # does for the same number written "-1.024" and as its Value() documentation says.
        ("-0.001Ki", -2),
        ("8Ei", INT64_MAX),
        ("9223372036854775807Ki", INT64_MAX),
        ("10E", 10**19),  # Go's int64 would overflow; we stay exact
    ],
    ids=repr,
)
def test_memory_bytes(text: str, expected: int) -> None:
    assert units.memory_bytes(text) == expected


# --- format_quantity, format_cpu, format_memory ----------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Fraction(0), "0"),
        (Fraction(3, 2), "1500m"),
        (Fraction(-1, 2), "-500m"),
        (Fraction(1, 1000), "1m"),
        (Fraction(1, 10**9), "1n"),
        (Fraction(1, 10**10), "1n"),  # finer than 1n rounds away from zero, as parsing does
        (Fraction(-1, 10**10), "-1n"),
        (Fraction(1, 3), "333333334n"),
        (Fraction(100), "100"),
        (Fraction(1000), "1k"),
        (Fraction(1200), "1200"),
        (Fraction(12000), "12k"),
        (Fraction(1536), "1536"),
        (Fraction(1_610_612_736), "1610612736"),
        (Fraction(10**18), "1E"),
        (Fraction(-(10**19)), "-10E"),
        (Fraction(10**21), "1000E"),
    ],
    ids=repr,
)
def test_format_quantity(value: Fraction, expected: str) -> None:
    assert units.format_quantity(value) == expected


@pytest.mark.parametrize(
    ("nanocores", "expected"),
    [
        (487_558_164, "488m"),  # kubectl: MilliValue() rounds up
        (250_000_000, "250m"),
        (1_000_000, "1m"),
        (1_000_001, "2m"),
        (1, "1m"),
        (0, "0m"),
        (12_436_000_000, "12436m"),
        (-1, "-1m"),
    ],
)
def test_format_cpu(nanocores: int, expected: str) -> None:
    assert units.format_cpu(nanocores) == expected


@pytest.mark.parametrize(
    ("memory_bytes", "expected"),
    [
        (512 * 2**20, "512Mi"),
        (749_785_088, "715Mi"),  # kubectl: Value()/(1024*1024), Go's truncating division
        (5_111_087_104, "4874Mi"),
        (2**20 - 1, "0Mi"),
        (0, "0Mi"),
        (-1, "0Mi"),
        (-(2**20), "-1Mi"),
    ],
)
def test_format_memory(memory_bytes: int, expected: str) -> None:
    assert units.format_memory(memory_bytes) == expected


# --- parse_go_duration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", 30 * 10**9),
        ("1m0s", 60 * 10**9),
        ("10.043s", 10_043_000_000),
        ("1" + MICRO_SIGN + "s", 1_000),
        ("1" + GREEK_MU + "s", 1_000),
        ("1us", 1_000),
        ("1h2m3.5s", 3_723_500_000_000),
        ("-1.5h", -5_400_000_000_000),
        ("+5s", 5 * 10**9),
        ("0", 0),
        ("-0", 0),
        ("+0", 0),
        ("0s", 0),
        (".5s", 500_000_000),
        ("5.s", 5 * 10**9),
        ("1.5ms", 1_500_000),
        ("100ns", 100),
        ("1h1h", 2 * 3600 * 10**9),
        ("1.0000000001s", 10**9),  # finer than 1ns is dropped
        ("9223372036854775807ns", INT64_MAX),
        ("-9223372036854775808ns", -(2**63)),
        ("2562047h47m16.854775807s", INT64_MAX),
        ("-2562047h47m16.854775808s", -(2**63)),
        # Go computes a fraction as float64(f) * (float64(unit) / scale) and truncates: here
        # the float product is exactly 1e9, so Go (and we) say 1s, not 999999999ns.
        ("0.999999999999999999999s", 10**9),
        # Go sums the parts in a uint64: 2^63 + 2^63 wraps to 0 and passes its checks.
        ("9223372036854775808ns9223372036854775808ns", 0),
    ],
    ids=repr,
)
def test_parse_go_duration(text: str, expected: int) -> None:
    assert units.parse_go_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "+",
        "-",
        "1",  # missing unit: only "0" may go without one
        "10",
        "00",
        "0.0",
        "1h1",
        "s",
        ".s",
        "-.s",
        "1x",
        "1S",
        "1sec",
        "1d",
        "1.2.3s",
        "1..s",
        " 1s",
        "1s ",
        "1 s",
        "1e3s",
        "1_000s",
        "\uff11s",  # FULLWIDTH DIGIT ONE
        "9223372036854775808ns",  # 2^63 is only allowed when negative
        "-9223372036854775809ns",
        "2562048h",
        "99999999999999999999s",
        "2562047h47m16.854775808s",
    ],
    ids=repr,
)
def test_rejected_go_durations(text: str) -> None:
    with pytest.raises(QuantityError) as caught:
        units.parse_go_duration(text)
    assert repr(text) in str(caught.value)
    assert "30s" in str(caught.value)


# --- properties -----------------------------------------------------------------------------

SUFFIX_FACTORS: dict[str, Fraction] = {
    **{suffix: Fraction(10) ** power for suffix, power in DECIMAL_SUFFIXES.items()},
    **{suffix: Fraction(2**power) for suffix, power in BINARY_SUFFIXES.items()},
    **{suffix: Fraction(10) ** power for suffix, power in EXPONENT_SUFFIXES.items()},
}


def _expected_quantity(sign: str, exact: Fraction, suffix: str) -> Fraction:
    """An independent statement of ParseQuantity's rounding and cap, computed with Fractions."""
    nanos = _away_from_zero(exact * 10**9)
    if suffix in BINARY_SUFFIXES:
        nanos = min(nanos, INT64_MAX * 10**9)
    return Fraction(-nanos if sign == "-" else nanos, 10**9)


@given(st.integers(-(10**20), 10**20), st.sampled_from(sorted(SUFFIX_FACTORS)))
def test_integer_with_suffix(number: int, suffix: str) -> None:
    sign = "-" if number < 0 else ""
    expected = _expected_quantity(sign, abs(number) * SUFFIX_FACTORS[suffix], suffix)
    assert units.parse_quantity(f"{number}{suffix}") == expected
    assert units.parse_quantity(units.format_quantity(expected)) == expected


@given(
    st.sampled_from(["", "+", "-"]),
    st.text("0123456789", max_size=12),
    st.none() | st.text("0123456789", max_size=12),
    st.sampled_from(sorted(SUFFIX_FACTORS)),
)
def test_generated_quantities(sign: str, whole: str, fraction: str | None, suffix: str) -> None:
    assume(whole or fraction)
    text = sign + whole + ("" if fraction is None else "." + fraction) + suffix
    exact = Fraction(Decimal(f"{whole or 0}.{fraction or 0}")) * SUFFIX_FACTORS[suffix]
    assert units.parse_quantity(text) == _expected_quantity(sign, exact, suffix)


@given(st.integers(-(10**30), 10**30))
def test_nano_values_round_trip(nanos: int) -> None:
    value = Fraction(nanos, 10**9)
    text = units.format_quantity(value)
    assert units.parse_quantity(text) == value
    assert "." not in text
    assert units.format_quantity(units.parse_quantity(text)) == text


@given(st.decimals(min_value=-(10**12), max_value=10**12, places=9))
def test_python_decimal_strings_are_quantities(value: Decimal) -> None:
    # str(Decimal) writes forms like "1.5E+7" and "1E-9": all valid Kubernetes syntax.
    assert units.parse_quantity(str(value)) == Fraction(value)


_fractions = st.fractions(min_value=-(10**12), max_value=10**12, max_denominator=10**12)


@given(_fractions, _fractions)
def test_formatting_and_parsing_keep_order(first: Fraction, second: Fraction) -> None:
    low, high = sorted((first, second))
    low_text, high_text = units.format_quantity(low), units.format_quantity(high)
    assert units.parse_quantity(low_text) <= units.parse_quantity(high_text)
    assert units.cpu_nanocores(low_text) <= units.cpu_nanocores(high_text)
    assert units.memory_bytes(low_text) <= units.memory_bytes(high_text)


def _decimal_text(value: int, places: int) -> str:
    whole, fraction = divmod(value, 10**places)
    digits = f"{fraction:0{places}d}".rstrip("0")
    return f"{whole}.{digits}" if digits else str(whole)


def go_duration_string(nanoseconds: int) -> str:
    """What Go's ``time.Duration.String`` prints ("1h2m3.5s", "1.5µs", "0s")."""
    sign = "-" if nanoseconds < 0 else ""
    size = abs(nanoseconds)
    if size == 0:
        return "0s"
    if size < 10**3:
        return f"{sign}{size}ns"
    if size < 10**6:
        return f"{sign}{_decimal_text(size, 3)}{MICRO_SIGN}s"
    if size < 10**9:
        return f"{sign}{_decimal_text(size, 6)}ms"
    hours, rest = divmod(size, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    text = f"{_decimal_text(rest, 9)}s"
    if hours or minutes:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return sign + text


@pytest.mark.parametrize(
    ("nanoseconds", "expected"),
    [
        (0, "0s"),
        (1_000, "1" + MICRO_SIGN + "s"),
        (1_500, "1.5" + MICRO_SIGN + "s"),
        (60 * 10**9, "1m0s"),
        (10_043_000_000, "10.043s"),
        (3_723_500_000_000, "1h2m3.5s"),
        (-5_400_000_000_000, "-1h30m0s"),
    ],
)
def test_duration_formatter_writes_like_go(nanoseconds: int, expected: str) -> None:
    assert go_duration_string(nanoseconds) == expected


@given(st.integers(-(2**63), INT64_MAX))
def test_go_duration_round_trip(nanoseconds: int) -> None:
    assert units.parse_go_duration(go_duration_string(nanoseconds)) == nanoseconds


@given(
    st.lists(
        st.tuples(st.integers(0, 10**5), st.sampled_from(sorted(DURATION_UNITS))),
        min_size=1,
        max_size=5,
    ),
    st.booleans(),
)
def test_go_duration_sums_its_parts(parts: list[tuple[int, str]], negative: bool) -> None:
    text = ("-" if negative else "") + "".join(f"{number}{unit}" for number, unit in parts)
    total = sum(number * DURATION_UNITS[unit] for number, unit in parts)
    assert units.parse_go_duration(text) == (-total if negative else total)


# --- the module stays pure ------------------------------------------------------------------


def test_units_imports_only_the_standard_library_and_errors() -> None:
    tree = ast.parse(Path(units.__file__).read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    outside = {name for name in imported if name.split(".")[0] not in sys.stdlib_module_names}
    assert outside == {"recorder.errors"}


@given(
    digits=st.text(alphabet="0123456789", min_size=1, max_size=19),
    suffix=st.sampled_from(["", "n", "u", "m", "k", "M", "G", "T", "Ki", "Mi", "Gi", "Ti", "Pi"]),
)
def test_the_fast_path_for_common_quantities_equals_the_general_one(
    digits: str, suffix: str
) -> None:
    text = digits + suffix
    general = units.parse_quantity(text)
    assert units.cpu_nanocores(text) == units._round_away_from_zero(general * 10**9)
    assert units.memory_bytes(text) == units._round_away_from_zero(general)


@pytest.mark.parametrize(
    "text", ["\u0661\u0662n", "\u00b2n", " 5n", "5 n", "\u0661\u0662Ki", "5 Ki", "\u00b3Ki"]
)
def test_the_fast_path_takes_only_ascii_digits(text: str) -> None:
    # Unicode digits pass str.isdigit(); Go refuses them, and so must both fast paths.
    with pytest.raises(QuantityError):
        units.parse_quantity(text)
    with pytest.raises(QuantityError):
        units.cpu_nanocores(text)
    with pytest.raises(QuantityError):
        units.memory_bytes(text)
