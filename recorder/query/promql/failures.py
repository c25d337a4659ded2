"""The errors of a PromQL evaluation that are not the query's syntax or parameters: Prometheus
answers them with ``errorType: execution`` and HTTP 422 (``QueryError`` is its ``bad_data``)."""

from __future__ import annotations

from recorder.errors import RecorderError


class ExecutionError(RecorderError):
    """A valid query whose evaluation failed on the data: two series with the same labels,
    matching that is not one-to-one, an invalid regular expression in ``label_replace``."""

    reason = "execution"
