"""The object cache's shared container tuples stay bounded by the live pods while a watch runs."""

from __future__ import annotations

from recorder.kube import objects_wire as wire
from recorder.kube.objects import PODS, ObjectCache


def pod(name: str, restarts: int) -> wire.Pod:
    return wire.Pod(
        metadata=wire.ObjectMeta(name=name, namespace="shop"),
        spec=wire.PodSpec(nodeName="n1", containers=[wire.Container(name="app")]),
        status=wire.PodStatus(
            containerStatuses=[wire.ContainerStatus(name="app", restartCount=restarts)]
        ),
    )


def test_restarts_and_replaced_pods_do_not_grow_the_shared_container_tuples() -> None:
    # 20 pods restarting for days (each restart count is a tuple of its own) and 5,000 pods
    # replaced under the same watch: without a trim, every tuple stayed until a full relist.
    cache = ObjectCache()
    for restarts in range(300):
        for i in range(20):
            decoded = cache.decode(PODS, pod(f"crashing-{i}", restarts))
            assert decoded is not None
            cache.put(PODS, *decoded, now=0.0)
    for i in range(5_000):
        decoded = cache.decode(PODS, pod(f"web-{i}", i))
        assert decoded is not None
        cache.put(PODS, *decoded, now=0.0)
        cache.remove(PODS, decoded[0])
    assert len(cache._interner._containers) <= 2 * cache.count(PODS) + 1_001
    # What is kept is still shared: a pod decoded again gets the tuple its twin holds.
    again = cache.decode(PODS, pod("crashing-0", 299))
    assert again is not None
    assert again[1].containers is cache.get(PODS, ("shop", "crashing-0")).containers
    assert [c.restart_count for c in again[1].containers] == [299]
