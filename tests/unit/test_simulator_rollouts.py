"""The simulator's rollouts: Deployments get a new template hash (ReplicaSet, pod names, labels)
once per period, replace their pods one by one without a replica missing, and their objects'
snapshots and watch events agree at every bucket."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from recorder.errors import ConfigError
from recorder.simulator import ClusterModel, SimulatorConfig
from recorder.simulator.core import CoreApi
from recorder.simulator.rollouts import HISTORY_LIMIT, RolloutSource
from tests.kube_support import Clock

T0 = 1_700_000_010.0
RES = 15.0


def cluster(period: float, **config: Any) -> tuple[Clock, ClusterModel, CoreApi]:
    clock = Clock(T0)
    settings: dict[str, Any] = {"churn_per_hour": 0.0, "pending_fraction": 0.3, **config}
    model = ClusterModel(
        SimulatorConfig(
            nodes=3,
            pods=40,
            seed=5,  # churn 0 draws another cluster: seed 5 has every controller
            resolution_seconds=RES,
            rollout_every_seconds=period,
            **settings,
        ),
        clock=clock,
    )
    return clock, model, CoreApi(model)


def parsed(source: RolloutSource, bucket: int) -> dict[str, dict[str, Any]]:
    return {e.key: json.loads(e.item) for e in source.snapshot(bucket).entries}


def test_each_deployment_rolls_out_once_per_period_to_a_new_replicaset() -> None:
    clock, model, api = cluster(600.0)
    replicasets = RolloutSource(api.pods, api.objects, "replicasets")
    deployments = [w for w in api.objects.workloads if w.controller == "Deployment"]
    assert len(deployments) >= 3
    start = model.bucket_of(T0)
    hashes: dict[str, set[str]] = {}
    at_start: dict[str, int] = {}
    pending_first = False
    for bucket in range(start, start + 160):  # 40 minutes
        frame = model.frame(bucket * RES)
        sets = parsed(replicasets, bucket)
        running = Counter(
            (p.namespace, p.slot.workload.name)
            for p in frame.pods
            if p.slot.workload.kind == "Deployment"
        )
        for w in deployments:
            wl = w.workload
            revision = model.revision(wl, bucket * RES)
            # No replica stops mid-rollout (surge), and a rollout's pods all run, though 30 %
            # of the first template's pods never started (pending_fraction).
            now = running[(wl.namespace, wl.name)]
            assert now >= at_start.setdefault(wl.name, now), (wl.name, bucket)
            done = revision and bucket * RES >= model.rollout_instant(wl, revision) + 300
            assert not done or now == wl.replicas, (wl.name, bucket)
            pending_first |= now < wl.replicas and not revision
            current = f"{wl.namespace}/{wl.name}-{model.template_hash(wl, revision)}"
            assert sets[current]["spec"]["replicas"] == wl.replicas
            own = [s for k, s in sets.items() if k.startswith(f"{wl.namespace}/{wl.name}-")]
            own = [s for s in own if s["metadata"]["ownerReferences"][0]["name"] == wl.name]
            assert sum(s["spec"]["replicas"] for s in own) == wl.replicas
            assert len(own) == min(revision, HISTORY_LIMIT) + 1
            for pod in (p for p in frame.pods if p.slot.workload is wl):
                h = pod.labels["pod-template-hash"]
                assert pod.name.startswith(f"{wl.name}-{h}-")
                assert f"{wl.namespace}/{wl.name}-{h}" in sets  # its ReplicaSet exists
                hashes.setdefault(wl.name, set()).add(h)
                if not revision or bucket * RES >= model.rollout_instant(wl, revision) + 300:
                    assert h == model.template_hash(wl, revision)  # done within half a period
        clock.step(1, RES)
    assert pending_first  # the scenario has pods that never started before a rollout
    end = (start + 159) * RES
    for w in deployments:
        made = model.revision(w.workload, end)
        rolled = {model.template_hash(w.workload, r) for r in range(1, made + 1)}
        assert made >= 3 and rolled <= hashes[w.workload.name], hashes  # every rollout's ran


def test_other_workloads_keep_their_pods_and_no_period_means_no_rollout() -> None:
    """StatefulSets, DaemonSets, Jobs (a batch profile's pods) and mirror pods keep theirs."""
    _clock, model, api = cluster(600.0)

    def others(at: float) -> set[tuple[str, str]]:
        return {
            (p.namespace, p.name)
            for p in model.frame(at).pods
            if api.objects.of_slot[p.slot.number].controller != "Deployment"
        }

    kinds = {w.controller for w in api.objects.workloads}
    assert {"StatefulSet", "DaemonSet", "Job", "CronJob", "Static"} <= kinds, kinds
    assert others(T0) == others(T0 + 3600) and others(T0)
    _clock, still, _api = cluster(0.0)
    assert {p.name for p in still.frame(T0).pods} == {p.name for p in still.frame(T0 + 3600).pods}
    w = next(s.workload for s in still.slots if s.workload.kind == "Deployment")
    assert still.revision(w, T0 + 86_400) == 0


@pytest.mark.parametrize("plural", ["deployments", "replicasets"])
def test_watch_events_replay_to_every_snapshot(plural: str) -> None:
    """From any bucket's list, the events after it give every later list, with resource
    versions that grow, between the two lists', and name each object's last change."""
    _clock, model, api = cluster(2 * RES)  # a rollout every other bucket: history is pruned
    source = RolloutSource(api.pods, api.objects, plural)
    start = model.bucket_of(T0)
    state = parsed(source, start)
    seen: Counter[str] = Counter()
    for bucket in range(start + 1, start + 40):
        events = source.events(bucket)
        stamps = [e.resource_version for e in events]
        assert stamps == sorted(set(stamps))
        assert all(source.list_rv(bucket - 1) < rv < source.list_rv(bucket) for rv in stamps)
        for event in events:
            seen[event.type] += 1
            item = json.loads(event.entry.item)
            assert item["metadata"]["resourceVersion"] == str(event.resource_version)
            if event.type == "DELETED":
                assert state.pop(event.entry.key)["spec"]["replicas"] == 0
            else:
                assert (event.entry.key in state) == (event.type == "MODIFIED")
                state[event.entry.key] = item
        assert state == parsed(source, bucket), bucket
    expected = {"ADDED", "MODIFIED", "DELETED"} if plural == "replicasets" else {"MODIFIED"}
    assert set(seen) == expected


def test_pods_follow_their_revision_s_template() -> None:
    """A pod's owner is its revision's ReplicaSet, and its containers' images and resources
    are that ReplicaSet's template's; some rollouts trim a generous CPU request."""
    clock, model, api = cluster(300.0)
    replicasets = RolloutSource(api.pods, api.objects, "replicasets")
    trimmed = 0
    for _ in range(120):
        bucket = api.current_bucket()
        sets = parsed(replicasets, bucket)
        for entry in api.pods.snapshot(bucket).entries:
            pod = json.loads(entry.item)
            owner = pod["metadata"]["ownerReferences"][0]
            if owner["kind"] != "ReplicaSet":
                continue
            rs = sets[f"{entry.namespace}/{owner['name']}"]
            assert rs["metadata"]["uid"] == owner["uid"]
            assert (
                rs["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
            )
            template = rs["spec"]["template"]["spec"]["containers"]
            assert [(c["image"], c["resources"]) for c in pod["spec"]["containers"]] == [
                (c["image"], c["resources"]) for c in template
            ]
        for w in api.objects.workloads:
            revision = model.revision(w.workload, bucket * RES)
            base = {c.name: c for c in w.resources}
            for c in api.objects.revision(w, revision).resources:
                was = base[c.name]
                assert (c.cpu_limit_millicores, c.memory_request_mib, c.memory_limit_mib) == (
                    was.cpu_limit_millicores,
                    was.memory_request_mib,
                    was.memory_limit_mib,
                )
                if c.cpu_request_millicores != was.cpu_request_millicores:
                    assert c.plan == "over" and was.cpu_request_millicores is not None
                    assert (
                        c.cpu_request_millicores
                        == max(10, -(-was.cpu_request_millicores * 8 // 100) * 10)
                        or was.cpu_request_millicores >= 1000
                    )
                    trimmed += 1
        clock.step(1, RES)
    assert trimmed


@pytest.mark.parametrize("period", [RES, -60.0, 31 * 86_400.0, float("nan")])
def test_a_rollout_period_out_of_range_is_refused(period: float) -> None:
    with pytest.raises(ConfigError, match="rollout period"):
        SimulatorConfig(resolution_seconds=RES, rollout_every_seconds=period)
