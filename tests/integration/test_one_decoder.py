"""One decoder for real metrics-server responses and the simulator's: the simulator's bodies,
in both of its styles and through both API versions, decode to exactly what its model says."""

from __future__ import annotations

import pytest

from recorder.kube.decode import decode_node_list, decode_pod_list
from recorder.kube.normalize import normalize_nodes, normalize_pods
from recorder.simulator import ClusterModel, MetricsApi, SimulatorConfig

START = 1_714_557_600.0


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("version", ["v1beta1", "v1"])
def test_simulator_bodies_decode_to_the_models_samples(legacy: bool, version: str) -> None:
    model = ClusterModel(
        SimulatorConfig(nodes=4, pods=40, seed=9, start_time=START), clock=lambda: START
    )
    api = MetricsApi(model, None, serve_v1=True, legacy=legacy)
    nodes_reply = api.handle("GET", f"/apis/metrics.k8s.io/{version}/nodes")
    pods_reply = api.handle("GET", f"/apis/metrics.k8s.io/{version}/pods")
    assert (nodes_reply.status, pods_reply.status) == (200, 200)
    nodes, bad_nodes = decode_node_list(nodes_reply.body)
    pods, bad_pods = decode_pod_list(pods_reply.body)
    now_ms = int(START * 1000)
    node_batch = normalize_nodes(nodes, now_ms=now_ms)
    pod_batch = normalize_pods(pods, now_ms=now_ms)
    assert bad_nodes == bad_pods == [] and node_batch.rejections == pod_batch.rejections == ()
    assert (*node_batch.samples, *pod_batch.samples) == model.samples(START)
    if not legacy:
        running = {(p.namespace, p.name): dict(p.labels) for p in model.pod_metrics(START)}
        assert {ref: dict(labels) for ref, labels in pod_batch.pod_labels.items()} == running
