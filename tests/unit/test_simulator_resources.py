"""Requests, limits and restarts drawn for simulated containers: Kubernetes' QoS rules, every
plan present in a larger cluster, limits above the model's peaks, one plan per template."""

from __future__ import annotations

from collections import Counter

from recorder.simulator import ClusterModel, SimulatorConfig
from recorder.simulator.objects import ClusterObjects
from recorder.simulator.resources import ContainerResources, cpu_text, memory_text, qos_class


def container(
    cpu: tuple[int | None, int | None] = (None, None),
    memory: tuple[int | None, int | None] = (None, None),
) -> ContainerResources:
    return ContainerResources("c", "over", cpu[0], cpu[1], memory[0], memory[1], 0, False)


def test_qos_class_follows_kubernetes_rules() -> None:
    assert qos_class([container(), container()]) == "BestEffort"
    assert qos_class([container(cpu=(100, 100), memory=(64, 64))]) == "Guaranteed"
    both = container(cpu=(100, 100), memory=(64, 64))
    assert qos_class([both, container()]) == "Burstable"
    assert qos_class([container(cpu=(100, 200), memory=(64, 64))]) == "Burstable"
    assert qos_class([container(cpu=(100, 100))]) == "Burstable"  # memory has no limit
    assert qos_class([container(memory=(64, None))]) == "Burstable"


def test_quantities_are_canonical() -> None:
    assert [cpu_text(m) for m in (10, 250, 1000, 1500, 2000)] == ["10m", "250m", "1", "1500m", "2"]
    assert [memory_text(m) for m in (16, 512, 1024, 1536, 4096)] == [
        "16Mi",
        "512Mi",
        "1Gi",
        "1536Mi",
        "4Gi",
    ]


def test_plans_cover_every_case_and_limits_sit_above_the_peaks() -> None:
    model = ClusterModel(SimulatorConfig(nodes=20, pods=2000, seed=3), clock=lambda: 1.7e9)
    objects = ClusterObjects(model)
    plans = Counter(c.plan for w in objects.workloads for c in w.resources)
    assert set(plans) == {"over", "under", "guaranteed", "none", "throttled", "oom"}
    assert plans["over"] > sum(plans.values()) / 3
    assert {w.qos_class for w in objects.workloads} == {"Guaranteed", "Burstable", "BestEffort"}
    peaks: dict[tuple[int, int], tuple[int, int]] = {}
    for bucket in range(0, 5760, 97):  # a day of 15 s buckets, sampled
        frame = model.frame(bucket * 15.0)
        for pod, usage in zip(frame.pods, frame.pod_usage, strict=True):
            for c in range(len(pod.container_names)):
                key = (pod.slot.number, c)
                cpu, kib = peaks.get(key, (0, 0))
                peaks[key] = (max(cpu, usage[2 * c]), max(kib, usage[2 * c + 1]))
    for (slot, c), (cpu, kib) in peaks.items():
        plan = objects.of_slot[slot].resources[c]
        if plan.cpu_limit_millicores is not None:
            assert cpu <= plan.cpu_limit_millicores * 1e6, plan
        if plan.memory_limit_mib is not None:
            assert kib <= plan.memory_limit_mib * 1024, plan
    # Every pod of a workload shares its template, so its plans.
    for w in objects.workloads:
        assert all(objects.of_slot[s.number] is w for s in model.slots if s.workload is w.workload)
