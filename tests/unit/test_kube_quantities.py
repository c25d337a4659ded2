"""``kube.quantities``: a column of quantities parsed at once equals ``units`` one by one, or
is left to it (``None``); never a different value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recorder import units
from recorder.errors import QuantityError
from recorder.kube import quantities

CPU_FORMS = ["n", "u", "m", ""]
MEMORY_FORMS = ["Ki", "Mi", "Gi", "", "k", "M", "G"]
RARER = ["T", "Ti", "P", "Pi", "E", "Ei", "K", "m", "e3", "E-2", ".5", ".", "i", " "]


def one_by_one(parse, texts):
    values = []
    for text in texts:
        try:
            values.append(parse(text))
        except (QuantityError, TypeError, IndexError, AttributeError):
            return None
    return values


def quantity(suffixes: list[str], digits: int = 20) -> st.SearchStrategy[str]:
    return st.builds(
        lambda sign, number, suffix: f"{sign}{number}{suffix}",
        st.sampled_from(["", "", "", "-", "+"]),
        st.text(alphabet="0123456789", min_size=0, max_size=digits),
        st.sampled_from(suffixes),
    )


def anything(suffixes: list[str]) -> st.SearchStrategy[object]:
    return st.one_of(
        quantity(suffixes),
        quantity(suffixes + RARER),
        st.text(max_size=8),
        st.none(),
        st.integers(),
    )


@given(st.lists(anything(CPU_FORMS), max_size=8))
def test_a_cpu_column_is_parsed_as_one_by_one_or_left_to_it(texts: list[object]) -> None:
    column = quantities.cpu_nanocores_column(texts)
    if column is not None:
        assert column == one_by_one(units.cpu_nanocores, texts)
        assert all(type(value) is int for value in column)


@given(st.lists(anything(MEMORY_FORMS), max_size=8))
def test_a_memory_column_is_parsed_as_one_by_one_or_left_to_it(texts: list[object]) -> None:
    column = quantities.memory_bytes_column(texts)
    if column is not None:
        assert column == one_by_one(units.memory_bytes, texts)
        assert all(type(value) is int for value in column)


# The digits each common form takes at most, so that its value fits in a signed 64-bit column.
CPU_DIGITS = {"n": 18, "u": 15, "m": 12, "": 9}
MEMORY_DIGITS = {"Ki": 15, "Mi": 12, "Gi": 9, "": 18, "k": 15, "M": 12, "G": 9}


def common(forms: dict[str, int]) -> st.SearchStrategy[str]:
    return st.sampled_from(sorted(forms)).flatmap(
        lambda suffix: st.text(alphabet="0123456789", min_size=1, max_size=forms[suffix]).map(
            lambda digits: digits + suffix
        )
    )


@given(st.lists(common(CPU_DIGITS), min_size=1, max_size=50))
def test_cpu_in_the_forms_metrics_server_writes_is_parsed_as_a_column(texts: list[str]) -> None:
    assert quantities.cpu_nanocores_column(texts) == [units.cpu_nanocores(t) for t in texts]


@given(st.lists(common(MEMORY_DIGITS), min_size=1, max_size=50))
def test_memory_in_the_forms_metrics_server_writes_is_parsed_as_a_column(
    texts: list[str],
) -> None:
    assert quantities.memory_bytes_column(texts) == [units.memory_bytes(t) for t in texts]


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        (["999999999999999999n"], [999_999_999_999_999_999]),
        (
            ["999999999999999u", "999999999999m", "999999999"],
            [10**18 - 10**3, 10**18 - 10**6, 10**18 - 10**9],
        ),
        (["0", "00012n", "7u"], [0, 12, 7000]),
    ],
)
def test_cpu_at_the_bounds_of_each_form(texts: list[str], expected: list[int]) -> None:
    assert quantities.cpu_nanocores_column(texts) == expected


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        (["999999999999999Ki"], [999_999_999_999_999 * 1024]),
        (["7", "1Mi", "2Gi", "3k", "4M", "5G"], [7, 2**20, 2**31, 3000, 4 * 10**6, 5 * 10**9]),
        (["999999999999999999"], [999_999_999_999_999_999]),
    ],
)
def test_memory_at_the_bounds_of_each_form(texts: list[str], expected: list[int]) -> None:
    assert quantities.memory_bytes_column(texts) == expected


@pytest.mark.parametrize(
    "texts",
    [
        [],
        ["1000000000000000000n"],  # 19 digits: may not fit once scaled, so one by one
        ["1000000000000000u"],
        ["1000000000000m"],
        ["10000000000"],
        ["12n", "1.5"],
        ["12n", "-3n"],
        ["12n", "+3n"],
        ["12n", "3e3"],
        ["12n", ""],
        ["12n", None],
        ["12n", "\uff11\uff12n"],  # fullwidth digits: int() takes them, Kubernetes does not
        ["12n", "1_000n"],
        ["12n\n13n"],
        ["12n", "4Ki"],
    ],
)
def test_a_cpu_column_with_one_uncommon_quantity_is_left_to_one_by_one(
    texts: list[object],
) -> None:
    assert quantities.cpu_nanocores_column(texts) is None


@pytest.mark.parametrize(
    "texts",
    [
        [],
        ["1000000000000000Ki"],
        ["1000000000000Mi"],
        ["10000000000Gi"],
        ["1000000000000000000"],
        ["4Ki", "4Ti"],
        ["4Ki", "4Ei"],
        ["4Ki", "129m"],  # millibytes: valid, rounded up one by one
        ["4Ki", "-4Ki"],
        ["4Ki", "4ki"],
        ["4Ki", "4K"],
        ["4Ki", "4Ki "],
        ["4Ki", "0.5Gi"],
    ],
)
def test_a_memory_column_with_one_uncommon_quantity_is_left_to_one_by_one(
    texts: list[object],
) -> None:
    assert quantities.memory_bytes_column(texts) is None


def test_the_shared_quantity_vectors_parse_as_units_does(shared_fixtures: Path) -> None:
    vectors = json.loads((shared_fixtures / "quantity_vectors.json").read_text())
    texts = [vector["input"] for vector in vectors]
    checked = 0
    for text in texts:
        for column, parse in (
            (quantities.cpu_nanocores_column, units.cpu_nanocores),
            (quantities.memory_bytes_column, units.memory_bytes),
        ):
            parsed = column([text])
            if parsed is not None:
                assert parsed == [parse(text)], text
                checked += 1
    assert checked >= 5  # the vectors hold some plain forms ("0", "6G", "5Ki", ...)
