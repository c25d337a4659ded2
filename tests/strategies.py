"""Hypothesis strategies shared by the tests."""

from __future__ import annotations

from hypothesis import strategies as st


def rfc3339_like() -> st.SearchStrategy[str]:
    """Timestamps shaped like RFC 3339, valid or not: month 13, day 32, hour 25, second 61,
    year 0 and 9999, no zone, lower-case ``z``, offsets of up to and beyond 24 hours."""
    return st.builds(
        "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}{}".format,
        st.integers(0, 9999),
        st.integers(0, 13),
        st.integers(0, 32),
        st.integers(0, 25),
        st.integers(0, 61),
        st.integers(0, 61),
        st.sampled_from(["Z", "z", "", "+00:00", "-23:59", "+23:59", "+24:00", "-12:00", "-00:01"]),
    )
