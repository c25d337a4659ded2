"""Columns of Kubernetes quantities in the forms metrics-server writes, parsed in a few passes
that run in C: a poll of 150,000 pods parses 400,000 quantities in about 0.1 s instead of 0.4 s
one by one (``units.cpu_nanocores`` / ``units.memory_bytes``, which define the values: a test
holds the two equal).

Each form's digits are bounded so that its value fits in int64 once scaled. A column with any
quantity in another form (a fraction, an exponent, a sign, a rarer suffix, more digits, not a
string) is not parsed here (``None``): the caller parses it one by one, which also says which
quantity is wrong and why.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

_NANO = 10**9

_CPU_COLUMN = re.compile(r"(?:(?:[0-9]{1,18}n|[0-9]{1,15}u|[0-9]{1,12}m|[0-9]{1,9})\n)*")
_MEMORY_COLUMN = re.compile(
    r"(?:(?:[0-9]{1,15}Ki|[0-9]{1,12}Mi|[0-9]{1,9}Gi|[0-9]{1,18}|[0-9]{1,15}k|[0-9]{1,12}M"
    r"|[0-9]{1,9}G)\n)*"
)
_NEWLINE = ord("\n")
_CPU_FACTOR = np.full(256, _NANO, np.int64)
"""Nanocores per unit, by a quantity's last character (a digit: cores)."""
_CPU_FACTOR[[ord("n"), ord("u"), ord("m")]] = [1, 10**3, 10**6]
_MEMORY_FACTOR = np.ones(256, np.int64)
"""Bytes per unit, by a quantity's last character (a digit: bytes)."""
_MEMORY_FACTOR[[ord("k"), ord("M"), ord("G")]] = [10**3, 10**6, 10**9]
_BINARY_FACTOR = np.ones(256, np.int64)
"""Bytes per unit, by the character before a last "i"."""
_BINARY_FACTOR[[ord("K"), ord("M"), ord("G")]] = [2**10, 2**20, 2**30]


def cpu_nanocores_column(texts: Sequence[object]) -> list[int] | None:
    """``[cpu_nanocores(t) for t in texts]`` when every text is in a common form ("12345n",
    "250u", "100m", "2"), else ``None`` (parse them one by one: that also says which is bad)."""
    raw = _column_text(texts, _CPU_COLUMN)
    if raw is None:
        return None
    codes = np.frombuffer(raw, np.uint8)
    factors = _CPU_FACTOR[codes[np.flatnonzero(codes == _NEWLINE) - 1]]
    return _scaled(raw.translate(None, b"num"), factors, len(texts))


def memory_bytes_column(texts: Sequence[object]) -> list[int] | None:
    """``[memory_bytes(t) for t in texts]`` when every text is in a common form ("6789Ki",
    "12Mi", "1Gi", "4096", "5k", "5M", "5G"), else ``None``."""
    raw = _column_text(texts, _MEMORY_COLUMN)
    if raw is None:
        return None
    codes = np.frombuffer(raw, np.uint8)
    ends = np.flatnonzero(codes == _NEWLINE)
    last = codes[ends - 1]
    factors = np.where(
        last == ord("i"), _BINARY_FACTOR[codes[ends - 2]], _MEMORY_FACTOR[last]
    )  # (a text of one digit: ``ends - 2`` is the previous text's newline, factor 1 unused)
    return _scaled(raw.translate(None, b"KMGik"), factors, len(texts))


def _column_text(texts: Sequence[object], form: re.Pattern[str]) -> bytes | None:
    """``texts`` as one ASCII text, each followed by a newline, if all match ``form``."""
    if not texts:
        return None
    try:
        joined = "\n".join(texts) + "\n"  # type: ignore[arg-type]  # not all str: TypeError
    except TypeError:
        return None
    if form.fullmatch(joined) is None:
        return None
    return joined.encode("ascii")


def _scaled(digits: bytes, factors: npt.NDArray[np.int64], count: int) -> list[int] | None:
    values = np.fromstring(digits, dtype=np.int64, sep="\n")
    if len(values) != count:  # cannot happen once the form matched; never guess
        return None
    return (values * factors).tolist()  # type: ignore[no-any-return]
