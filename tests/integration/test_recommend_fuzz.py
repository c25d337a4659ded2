"""No client input to ``/api/v1/recommendations`` yields a 5xx: each parameter fuzzed with the
hostile values of ``test_api_fuzz`` (over its real server and store), the others valid-looking;
a bad one is a 400 with the error envelope."""

from __future__ import annotations

import httpx
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.integration.test_api_fuzz import client, hostile, selectors, times

__all__ = ["client"]  # the fixture, shared with test_api_fuzz

ROUTE = "/api/v1/recommendations"
PARAMS: dict[str, tuple[st.SearchStrategy[str], int]] = {
    "namespace": (st.sampled_from(["shop", "kube-system"]), 253),
    "kind": (st.sampled_from(["Deployment", "pod", "CronJob"]), 63),
    "name": (st.sampled_from(["web-0", "web"]), 253),
    "container": (st.sampled_from(["app", "sidecar"]), 253),
    "selector": (selectors, 1024),
    "cluster": (st.sampled_from(["default", "other"]), 63),
    "window": (st.sampled_from(["1h", "14d", "2w", "400d", "90m"]), 20),
    "end": (times, 40),
    "cpu_percentile": (st.sampled_from(["50", "95", "99.9", "100"]), 20),
    "memory_buffer": (st.sampled_from(["0", "15", "1000"]), 20),
    "min_points": (st.sampled_from(["1", "100", "1000000000"]), 20),
    "throttle_ratio": (st.sampled_from(["0.5", "0.9", "1"]), 20),
    "allow_hpa": (st.sampled_from(["true", "false"]), 20),
    "format": (st.sampled_from(["json", "csv", "yaml-patch", "json-patch"]), 20),
}
TYPES = ("application/json", "text/csv", "application/yaml", "text/plain")


@st.composite
def parameters(draw: st.DrawFn) -> dict[str, str]:
    target = draw(st.sampled_from(sorted(PARAMS)))
    chaos = draw(st.integers(0, 9)) == 0
    out = {}
    for name, (valid, max_length) in PARAMS.items():
        if name == target or (chaos and draw(st.booleans())):
            out[name] = draw(hostile(max_length))
        elif draw(st.booleans()):
            out[name] = draw(valid)
    return out


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(params=parameters())
def test_no_parameter_value_yields_a_5xx(client: httpx.Client, params: dict[str, str]) -> None:
    response = client.get(ROUTE, params=params)
    event(f"{response.status_code}")
    assert response.status_code < 500, (response.request.url, response.text)
    if response.status_code >= 400:
        body = response.json()
        assert body["status"] == "error" and body["errorType"] == "bad_data", body
        assert isinstance(body["error"], str) and body["error"], body
    else:
        assert response.headers["content-type"].startswith(TYPES)
        if response.headers["content-type"].startswith("application/json"):
            assert response.json()["status"] == "success"


def test_the_stored_pods_are_their_own_workloads_without_cluster_objects(
    client: httpx.Client,
) -> None:
    """The fuzzed store holds samples only: each pod is a workload of kind Pod, with a
    proposal (180 points) and a note that its requests were not recorded."""
    found = client.get(ROUTE, params={"namespace": "shop", "min_points": "10"}).json()["data"]
    rows = found["recommendations"]
    assert {(r["kind"], r["name"]) for r in rows} == {("Pod", f"web-{i}") for i in range(3)}
    for r in rows:
        assert r["cpu"]["proposed"] is not None and r["memory"]["proposed"] is not None
        assert any("not recorded" in note for note in r["notes"])
