"""Kubernetes quantities and Go durations, parsed exactly (values are Fractions and ints).

The rules below were read in the Go sources, not guessed:

- ``parse_quantity`` follows ``ParseQuantity`` and ``parseQuantityString`` in
  k8s.io/apimachinery ``pkg/api/resource/quantity.go`` (suffixes from ``suffix.go``). A value is
  kept exactly down to 1n; anything finer is rounded *away from zero* ("0.5n" is 1n, "-3.001n"
  is -4n). A value with a binary suffix (Ki..Ei) is capped, silently, at 2^63-1 in magnitude
  ("8Ei" is 9223372036854775807); decimal values are not capped. "." "+" "-" and a bare "m"
  parse as 0, as in Go. The exponent of ``1e3`` is truncated to int32, as in Go.
- ``cpu_nanocores`` and ``memory_bytes`` are ``ScaledValue(Nano)`` and ``Value()``: round away
  from zero (``negativeScaleInt64`` in ``math.go``). Parsing already rounds to 1n, so nanocores
  are exact. For a negative non-integer byte count Go's answer depends on the quantity's
  internal form ("-1.024" gives -2, but "-0.001Ki" gives 0: ``scaledValue`` in
  ``scale_int.go``); we always round away from zero, as Go's int64 form and its docs do.
- ``format_cpu`` / ``format_memory`` print like ``kubectl top`` (kubectl
  ``pkg/metricsutil/metrics_printer.go``): ``MilliValue()`` then "m" (rounded up to whole
  millicores), and ``Value() / (1024*1024)`` then "Mi" (Go's integer division: truncated).
- ``parse_go_duration`` follows ``time.ParseDuration`` (Go ``src/time/format.go``), including its
  overflow checks and its one float64 step for fractions, reproduced bit for bit (Python floats
  are the same IEEE binary64), so "0.999999999999999999999s" is 1s there and here.

Deliberate limits, where Go would build a number with billions of digits: a non-zero value
whose decimal exponent (after the point is moved) is above ``MAX_DECIMAL_EXPONENT`` or at or
below -2^31 (where Go's int32 scale arithmetic wraps) is rejected.
"""

from __future__ import annotations

import re
from decimal import Decimal
from fractions import Fraction

from recorder.errors import QuantityError

MAX_DECIMAL_EXPONENT = 1000

_DECIMAL_SUFFIXES = {
    "n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18,
}  # fmt: skip
_BINARY_SUFFIXES = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_SUFFIX_FOR_EXPONENT = {exponent: suffix for suffix, exponent in _DECIMAL_SUFFIXES.items()}
_INT64_MAX = 2**63 - 1
_NANO = 10**9
_MEBI = 2**20

# The language of parseQuantityString. Each part's character class is disjoint from the next
# part's, so the greedy match splits a string exactly where Go's scanner does.
_QUANTITY = re.compile(
    r"(?P<sign>[+-]?)(?P<num>[0-9]*)(?:\.(?P<denom>[0-9]*))?(?P<suffix>[eEinumkKMGTP]*[+-]?[0-9]*)"
)
_EXPONENT_SUFFIX = re.compile(r"[eE]([+-]?[0-9]+)")  # what strconv.ParseInt accepts after e/E
_QUANTITY_HINT = "expected a Kubernetes quantity such as '250m', '1.5', '512Mi', '2G' or '1e3'"

_DURATION_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign
    "\u03bcs": 1_000,  # Greek small letter mu
    "ms": 1_000_000,
    "s": _NANO,
    "m": 60 * _NANO,
    "h": 3600 * _NANO,
}
_DURATION_PART = re.compile(r"(?P<whole>[0-9]*)(?:\.(?P<fraction>[0-9]*))?(?P<unit>[^0-9.]*)")
_DURATION_HINT = "expected a Go duration such as '30s', '1m30s', '1h2m3.5s', '500ms' or '0'"


def parse_quantity(text: str) -> Fraction:
    """Parse a Kubernetes ``resource.Quantity`` string exactly as Go's ``ParseQuantity`` does."""
    if not text:
        raise _quantity_error(text, "it is empty")
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise _quantity_error(text, "it is not <sign><number><suffix>")
    num, denom, suffix = match["num"], match["denom"] or "", match["suffix"]
    digits = num + denom
    mantissa = int(Decimal(digits)) if digits else 0  # Decimal: no 4300-digit limit

    if suffix in _BINARY_SUFFIXES:
        power = _BINARY_SUFFIXES[suffix]
        # Go's fast path cannot take Pi/Ei, and its slow path (inf.Dec) needs a digit.
        if not digits and power >= 50:
            raise _quantity_error(text, f"there is no digit before {suffix!r}")
        exact = Fraction(mantissa << power, 10 ** len(denom))
        magnitude = min(_round_away_from_zero(exact * _NANO), _INT64_MAX * _NANO)
    else:
        exponent = _decimal_exponent(text, suffix)
        if not digits and exponent < -9:  # Go's slow path again: inf.Dec needs a digit
            raise _quantity_error(text, f"there is no digit before {suffix!r}")
        magnitude = _nanos(text, mantissa, exponent - len(denom), len(digits))
    return Fraction(-magnitude if match["sign"] == "-" else magnitude, _NANO)


# What metrics-server writes nearly always (``487558164n``, ``5m``, ``0``, ``732212Ki``): an
# unsigned integer and a common suffix. Exact integer arithmetic answers those without building
# Fractions (10x faster; a poll of 150,000 pods parses 400,000 quantities); anything else, and a
# binary value past Go's int64 cap, takes the general path. A test holds both paths equal.
_COMMON = re.compile(r"([0-9]{1,18})(n|u|m|k|M|G|T|Ki|Mi|Gi|Ti|)")
_COMMON_NANOS = {"n": 1, "u": 10**3, "m": 10**6, "": 10**9, "k": 10**12, "M": 10**15}
_COMMON_NANOS |= {"G": 10**18, "T": 10**21}
_COMMON_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def _common_nanos(text: str) -> int | None:
    match = _COMMON.fullmatch(text)
    if match is None:
        return None
    value, suffix = int(match[1]), match[2]
    factor = _COMMON_BINARY.get(suffix)
    if factor is None:
        return value * _COMMON_NANOS[suffix]
    scaled = value * factor
    return None if scaled > _INT64_MAX else scaled * _NANO


def cpu_nanocores(text: str) -> int:
    """CPU as integer nanocores: Go's ``ScaledValue(resource.Nano)``, exact after parsing."""
    if text[-1:] == "n":  # what metrics-server writes for CPU, without a regular expression
        digits = text[:-1]
        if 0 < len(digits) <= 18 and digits.isascii() and digits.isdigit():
            return int(digits)
    common = _common_nanos(text)
    if common is not None:
        return common
    return _round_away_from_zero(parse_quantity(text) * _NANO)


def memory_bytes(text: str) -> int:
    """Memory as integer bytes: Go's ``Value()``, rounded away from zero ("0.5" -> 1)."""
    if text[-2:] == "Ki":  # what metrics-server writes for memory (18 digits fit in int64)
        digits = text[:-2]
        if 0 < len(digits) <= 15 and digits.isascii() and digits.isdigit():
            return int(digits) << 10
    common = _common_nanos(text)
    if common is not None:
        return -(-common // _NANO)
    return _round_away_from_zero(parse_quantity(text))


def format_quantity(value: Fraction) -> str:
    """The canonical DecimalSI string, as Go's ``Quantity.String`` writes it: 1.5 is "1500m".

    The mantissa is an integer and the suffix the largest one that keeps it so. A value finer
    than 1n is first rounded away from zero, as ``parse_quantity`` rounds it. Above "E" (10^18)
    the mantissa grows ("1000E") and still parses back unchanged.
    """
    mantissa = _round_away_from_zero(value * _NANO)
    if mantissa == 0:
        return "0"
    exponent = -9
    while mantissa % 10 == 0:
        mantissa //= 10
        exponent += 1
    while exponent % 3:
        mantissa *= 10
        exponent -= 1
    if exponent > 18:
        mantissa *= 10 ** (exponent - 18)
        exponent = 18
    # str(Decimal(n)) prints any number of digits; str(n) stops at 4300.
    return f"{Decimal(mantissa)}{_SUFFIX_FOR_EXPONENT[exponent]}"


def format_cpu(nanocores: int) -> str:
    """CPU the way ``kubectl top`` prints it: whole millicores, rounded up ("488m")."""
    millicores = _round_away_from_zero(Fraction(nanocores, 1_000_000))
    return f"{millicores}m"


def format_memory(memory_bytes: int) -> str:
    """Memory the way ``kubectl top`` prints it: whole MiB, truncated ("715Mi")."""
    mebibytes = abs(memory_bytes) // _MEBI
    return f"{-mebibytes if memory_bytes < 0 else mebibytes}Mi"


def parse_go_duration(text: str) -> int:
    """Parse a Go duration ("1h2m3.5s", "10.043s", "-1.5h", "0") into integer nanoseconds."""
    rest, negative = text, False
    if rest[:1] in ("+", "-"):
        rest, negative = rest[1:], rest[0] == "-"
    if rest == "0":
        return 0
    if not rest:
        raise _duration_error(text, "there is no number")
    total, position = 0, 0
    while position < len(rest):
        part = _DURATION_PART.match(rest, position)
        assert part is not None  # every part of the pattern may be empty
        position = part.end()
        whole, fraction, unit = part["whole"], part["fraction"] or "", part["unit"]
        if not whole and not fraction:
            raise _duration_error(text, "a number has no digits")
        if not unit:
            raise _duration_error(text, "a number has no unit (ns, us, µs, ms, s, m, h)")
        if unit not in _DURATION_UNITS_NS:
            raise _duration_error(text, f"unknown unit {unit!r} (ns, us, µs, ms, s, m, h)")
        unit_ns = _DURATION_UNITS_NS[unit]
        whole_value = int(Decimal(whole)) if whole else 0
        if whole_value > 2**63 // unit_ns:
            raise _duration_error(text, "it is longer than Go's limit of about 292 years")
        value = whole_value * unit_ns
        numerator, scale = _go_leading_fraction(fraction)
        if numerator:
            # Go computes this one step in float64; Python floats are the same binary64.
            value += int(float(numerator) * (float(unit_ns) / float(scale)))
        # Go sums in a uint64 (which wraps at 2^64) and allows 2^63 until the sign is applied.
        total = (total + value) % 2**64
        if value > 2**63 or total > 2**63:
            raise _duration_error(text, "it is longer than Go's limit of about 292 years")
    if negative:
        return -total
    if total > _INT64_MAX:
        raise _duration_error(text, "it is longer than Go's limit of about 292 years")
    return total


def _decimal_exponent(text: str, suffix: str) -> int:
    if suffix in _DECIMAL_SUFFIXES:
        return _DECIMAL_SUFFIXES[suffix]
    match = _EXPONENT_SUFFIX.fullmatch(suffix)
    if match is None:
        raise _quantity_error(
            text,
            f"unknown suffix {suffix!r} (decimal: n u m k M G T P E; binary: Ki Mi Gi Ti Pi Ei;"
            " exponent: e3, E-3)",
        )
    exponent = int(Decimal(match[1]))
    if not -(2**63) <= exponent <= _INT64_MAX:
        raise _quantity_error(text, "the exponent does not fit in 64 bits")
    return (exponent + 2**31) % 2**32 - 2**31  # Go: int32(parsed)


def _nanos(text: str, mantissa: int, exponent: int, digit_count: int) -> int:
    """|mantissa * 10^exponent| in nano units, rounded away from zero, without huge powers."""
    if mantissa == 0:
        return 0
    if exponent > MAX_DECIMAL_EXPONENT:
        raise _quantity_error(text, f"the exponent is above {MAX_DECIMAL_EXPONENT}")
    if exponent <= -(2**31):
        raise _quantity_error(text, "the exponent is below -2^31")
    if exponent + digit_count <= -9:  # below 1n, so it rounds up to 1n
        return 1
    return _round_away_from_zero(Fraction(mantissa) * Fraction(10) ** (exponent + 9))


def _go_leading_fraction(digits: str) -> tuple[int, int]:
    """Go's ``leadingFraction``: digits after the point until they would pass 2^63."""
    numerator, scale = 0, 1
    for digit in digits:
        if numerator > _INT64_MAX // 10 or numerator * 10 + int(digit) > 2**63:
            break
        numerator, scale = numerator * 10 + int(digit), scale * 10
    return numerator, scale


def _round_away_from_zero(value: Fraction) -> int:
    magnitude = -(-abs(value.numerator) // value.denominator)
    return -magnitude if value < 0 else magnitude


def _quantity_error(text: str, reason: str) -> QuantityError:
    return QuantityError(f"invalid quantity {text!r}: {reason}; {_QUANTITY_HINT}")


def _duration_error(text: str, reason: str) -> QuantityError:
    return QuantityError(f"invalid Go duration {text!r}: {reason}; {_DURATION_HINT}")
