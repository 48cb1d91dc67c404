"""The fetcher core with a controllable collector: single flight, batching, invalidation races."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from services.fetcher import cache as caching
from services.fetcher.collector import Collection, PodSample, Validation, assemble, pod_key
from services.fetcher.fetching import Fetcher
from services.fetcher.tracking import Tracker
from shared.messages import MetricsSnapshot, PodRef, ReplicaMetrics, Target, va_key


def target(name: str, *, model: str = "m", pods: tuple[str, ...] = ("p",)) -> Target:
    return Target(
        namespace="ns", name=name, at=datetime.now(UTC), model_id=model,
        pods=tuple(PodRef(name=f"{name}-{p}") for p in pods),
    )


class GatedCollector:
    """Answers after ``gate`` opens; records every call."""

    name = "fake"

    def __init__(self) -> None:
        self.queries = 0
        self.calls: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def _snap(self, t: Target) -> MetricsSnapshot:
        samples = {pod_key(t.namespace, p.name): PodSample(kv_cache_usage=0.1, waiting=0, running=1) for p in t.pods}
        return assemble(t, samples, collected_at=datetime.now(UTC))[0]

    async def collect(self, targets: Sequence[Target]) -> Collection:
        self.calls.append([t.name for t in targets])
        await self.gate.wait()
        self.queries += 1
        return Collection(snapshots={va_key(t.namespace, t.name): await self._snap(t) for t in targets}, queries=1)

    async def allocation_metrics(self, target: Target) -> MetricsSnapshot:
        return (await self.collect([target])).snapshots[va_key(target.namespace, target.name)]

    async def replica_metrics(
        self, *, model_id: str, namespace: str, targets: Sequence[Target]
    ) -> tuple[ReplicaMetrics, ...]:
        self.calls.append(["replicas", model_id])
        return tuple(ReplicaMetrics(pod=p.name) for t in targets for p in t.pods)

    async def validate_availability(self, *, model_id: str, namespace: str) -> Validation:
        return Validation(available=True)

    async def aclose(self) -> None:
        return None


@pytest.fixture
async def setup() -> tuple[Fetcher, GatedCollector, list[MetricsSnapshot]]:
    collector = GatedCollector()
    published: list[MetricsSnapshot] = []

    async def publish(s: MetricsSnapshot) -> None:
        published.append(s)

    fetcher = Fetcher(collector=collector, cache=caching.MemoryCache(30), tracker=Tracker(), publish=publish)
    return fetcher, collector, published


async def _with_refresher(fetcher: Fetcher) -> asyncio.Task[None]:
    return asyncio.create_task(fetcher.run_refresher())


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_concurrent_misses_for_one_va_share_one_collection(setup) -> None:  # type: ignore[no-untyped-def]
    fetcher, collector, published = setup
    fetcher.track(target("a"))
    task = await _with_refresher(fetcher)
    try:
        results = await asyncio.gather(*(fetcher.fetch("ns", "a") for _ in range(5)))
        assert collector.calls == [["a"]]
        assert {r[1] for r in results} == {"fetched"} and len({id(r[0]) for r in results}) == 1
        assert len(published) == 1
        snap, answer = await fetcher.fetch("ns", "a")
        assert answer == "cached" and snap is results[0][0] and collector.calls == [["a"]]
    finally:
        await _stop(task)


async def test_a_burst_of_invalidations_is_one_batched_collection(setup) -> None:  # type: ignore[no-untyped-def]
    fetcher, collector, published = setup
    for i in range(30):
        fetcher.track(target(f"va-{i}"))
    task = await _with_refresher(fetcher)
    try:
        for i in range(30):
            fetcher.invalidate("ns", f"va-{i}")  # a re-list invalidates every VA
        async with asyncio.timeout(2):
            while len(published) < 30:
                await asyncio.sleep(0.01)
        assert len(collector.calls) == 1 and len(collector.calls[0]) == 30
    finally:
        await _stop(task)


async def test_data_collected_before_an_invalidation_is_neither_cached_nor_published(setup) -> None:  # type: ignore[no-untyped-def]
    fetcher, collector, published = setup
    fetcher.track(target("a"))
    collector.gate.clear()
    cycle = asyncio.create_task(fetcher.cycle())
    await asyncio.sleep(0.01)
    assert collector.calls == [["a"]]  # the cycle's collection is running…
    fetcher.invalidate("ns", "a")  # …when the deployment changes
    refresher = await _with_refresher(fetcher)
    try:
        collector.gate.set()
        report = await cycle
        assert report.skipped == 1
        async with asyncio.timeout(2):
            while not published:
                await asyncio.sleep(0.01)
        # Only the refresh that started after the invalidation got through.
        assert len(collector.calls) == 2 and len(published) == 1
    finally:
        await _stop(refresher)


async def test_invalidation_drops_the_models_replica_entry(setup) -> None:  # type: ignore[no-untyped-def]
    fetcher, collector, _ = setup
    fetcher.track(target("a", pods=("0", "1")))
    fetcher.track(target("b", pods=("0",)))
    await fetcher.cycle()
    replicas = await fetcher.replica_metrics("ns", "m")  # built from the cycle's snapshots: no call
    assert [r.pod for r in replicas] == ["a-0", "a-1", "b-0"] and ["replicas", "m"] not in collector.calls
    fetcher.invalidate("ns", "b")
    assert fetcher.cache.get(caching.replica_key("ns", "m")) is None
    await fetcher.replica_metrics("ns", "m")
    assert ["replicas", "m"] in collector.calls
    await fetcher.aclose()


async def test_forgetting_a_va_drops_its_cache(setup) -> None:  # type: ignore[no-untyped-def]
    fetcher, _, _ = setup
    fetcher.track(target("a"))
    await fetcher.cycle()
    assert fetcher.cache.get(caching.allocation_key("ns", "a")) is not None
    fetcher.forget("ns", "a")
    assert len(fetcher.cache) == 0
    snap, answer = await fetcher.fetch("ns", "a")
    assert answer == "unknown" and snap.status == "unavailable"


async def test_the_issues_metrics_follow_cycles_invalidations_and_deletions() -> None:
    from prometheus_client import REGISTRY

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    names = {
        "partial": ("wva_fetcher_snapshots_total", {"status": "partial"}),  # the fake has no rates
        "cycles": ("wva_fetcher_cycle_duration_seconds_count", {}),
        "invalidated": ("wva_fetcher_cache_evictions_total", {"reason": "invalidated"}),
        "deleted": ("wva_fetcher_cache_evictions_total", {"reason": "deleted"}),
    }
    before = {k: value(n, **labels) for k, (n, labels) in names.items()}

    def delta() -> dict[str, float]:
        return {k: value(n, **labels) - before[k] for k, (n, labels) in names.items()}

    fail = [False]

    async def publish(_: MetricsSnapshot) -> None:
        if fail[0]:
            raise ConnectionError("NATS is away")

    fetcher = Fetcher(collector=GatedCollector(), cache=caching.MemoryCache(30), tracker=Tracker(), publish=publish)
    fetcher.track(target("a", pods=("0", "1")))
    fetcher.track(target("b"))
    assert value("wva_fetcher_tracked_targets") == 2
    await fetcher.cycle()
    assert value("wva_fetcher_cache_entries") == 3  # two allocation entries and the model's replicas
    fail[0] = True
    await fetcher.cycle()  # collected but not published: not counted as published
    assert delta() == {"partial": 2, "cycles": 2, "invalidated": 0, "deleted": 0}
    fetcher.invalidate("ns", "a")  # its allocation entry and the model's replica entry
    fetcher.forget("ns", "b")  # its allocation entry (the replica entry is already gone)
    assert delta()["invalidated"] == 2 and delta()["deleted"] == 1
    assert value("wva_fetcher_tracked_targets") == 1 and value("wva_fetcher_cache_entries") == 0
    await fetcher.aclose()
