"""Values over steps (recorder.query.promql.values): label sets, steps, merging series."""

from __future__ import annotations

import numpy as np
import pytest

from recorder.query.promql.failures import ExecutionError
from recorder.query.promql.values import Steps, StepSeries, labels_of, merged, without_name


def test_labels_are_sorted_without_empty_values() -> None:
    assert labels_of({"b": "2", "a": "1", "c": ""}) == (("a", "1"), ("b", "2"))
    assert without_name((("__name__", "m"), ("a", "1"))) == (("a", "1"),)


def test_steps_run_from_start_to_at_most_end() -> None:
    assert Steps.of(0, 1000, 300).times_ms.tolist() == [0, 300, 600, 900]
    assert Steps.of(5, 5, 0).times_ms.tolist() == [5]


def test_series_with_one_label_set_merge_where_they_do_not_overlap() -> None:
    a = StepSeries((("a", "1"),), np.array([1.0, 0.0]), np.array([True, False]))
    b = StepSeries((("a", "1"),), np.array([0.0, 2.0]), np.array([False, True]))
    (one,) = merged([a, b], "clash")
    assert one.values.tolist() == [1.0, 2.0] and one.present.all()
    with pytest.raises(ExecutionError, match="clash"):
        merged([a, a], "clash")
