"""The fetcher core with a controllable collector: single flight, batching, invalidation races."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from services.fetcher import cache as caching
from services.fetcher.collector import Collection, PodSample, assemble, pod_key
from services.fetcher.fetching import Fetcher
from services.fetcher.tracking import Tracker
from shared import messages
from shared.messages import MetricsSnapshot, PodRef, Target, va_key


def target(name: str, *, model: str = "m", pods: tuple[str, ...] = ("p",), generation: int = 1) -> Target:
    return Target(
        namespace="ns", name=name, at=datetime.now(UTC), model_id=model, deployment_generation=generation,
        template_hash=f"hash-{generation}", pods=tuple(PodRef(name=f"{name}-{p}") for p in pods),
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

    async def aclose(self) -> None:
        return None


@pytest.fixture
async def setup() -> tuple[Fetcher, GatedCollector, list[MetricsSnapshot]]:
    collector = GatedCollector()
    published: list[MetricsSnapshot] = []

    async def publish(batch: Sequence[MetricsSnapshot]) -> list[Exception | None]:
        published.extend(batch)
        return [None] * len(batch)

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


async def test_an_invalidation_ahead_of_its_target_waits_for_it(setup) -> None:  # type: ignore[no-untyped-def]
    """Issue #13 §1: the snapshot after a change names the generation (and template) it describes."""
    fetcher, collector, published = setup
    fetcher.track(target("a", generation=1))
    task = await _with_refresher(fetcher)
    try:
        fetcher.invalidate("ns", "a", generation=2)  # the watcher's invalidation overtook its target
        await asyncio.sleep(0.1)
        assert collector.calls == [] and published == []  # nothing collected with the old Target
        report = await fetcher.cycle()  # a background cycle meanwhile does not publish it either
        assert report.skipped == 1 and published == []
        fetcher.track(target("a", generation=2))
        async with asyncio.timeout(2):
            while not published:
                await asyncio.sleep(0.01)
        assert [(s.deployment_generation, s.template_hash) for s in published] == [(2, "hash-2")]
        # An invalidation at or behind the tracked generation refreshes at once.
        fetcher.invalidate("ns", "a", generation=2)
        async with asyncio.timeout(2):
            while len(published) < 2:
                await asyncio.sleep(0.01)
        assert published[-1].deployment_generation == 2
    finally:
        await _stop(task)


async def test_a_deleted_va_leaves_no_entry_behind(setup) -> None:  # type: ignore[no-untyped-def]
    """Issue #12 item 12: the va_deleted invalidation that follows a deletion must not re-create state."""
    fetcher, _, _ = setup
    for i in range(100):
        fetcher.track(target(f"va-{i}"))
        fetcher.invalidate("ns", f"va-{i}", generation=5)  # one waits for a newer Target when deleted
    for i in range(100):
        fetcher.forget("ns", f"va-{i}")
        fetcher.invalidate("ns", f"va-{i}")  # va_deleted, after the tombstone
    assert fetcher.tracker.entries() == 0 and len(fetcher.cache) == 0
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

    async def publish(batch: Sequence[MetricsSnapshot]) -> list[Exception | None]:
        if fail[0]:
            raise ConnectionError("NATS is away")
        return [None] * len(batch)

    fetcher = Fetcher(collector=GatedCollector(), cache=caching.MemoryCache(30), tracker=Tracker(), publish=publish)
    fetcher.track(target("a", pods=("0", "1")))
    fetcher.track(target("b"))
    assert value("wva_fetcher_tracked_targets") == 2
    await fetcher.cycle()
    assert value("wva_fetcher_cache_entries") == 2  # one allocation entry per VA
    fail[0] = True
    await fetcher.cycle()  # collected but not published: not counted as published
    assert delta() == {"partial": 2, "cycles": 2, "invalidated": 0, "deleted": 0}
    fetcher.invalidate("ns", "a")
    fetcher.forget("ns", "b")
    assert delta()["invalidated"] == 1 and delta()["deleted"] == 1
    assert value("wva_fetcher_tracked_targets") == 1 and value("wva_fetcher_cache_entries") == 0
    await fetcher.aclose()


async def test_snapshots_a_batch_could_not_publish_are_counted_and_logged_and_the_rest_published(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from prometheus_client import REGISTRY

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    lost = {"b"}
    tried: list[list[str]] = []

    async def publish(batch: Sequence[MetricsSnapshot]) -> list[Exception | None]:
        tried.append([s.name for s in batch])
        return [ConnectionError("no ack") if s.name in lost else None for s in batch]

    fetcher = Fetcher(collector=GatedCollector(), cache=caching.MemoryCache(30), tracker=Tracker(), publish=publish)
    for name in ("a", "b", "c"):
        fetcher.track(target(name))
    failures, published = value("wva_fetcher_publish_failures_total"), value("wva_fetcher_snapshots_total", status="partial")
    await fetcher.cycle()
    assert value("wva_fetcher_publish_failures_total") - failures == 1
    assert value("wva_fetcher_snapshots_total", status="partial") - published == 2
    assert "could not publish 1 of 3 metrics snapshots: no ack" in caplog.text
    lost.clear()
    await fetcher.cycle()  # the next cycle publishes it again
    assert sorted(tried[-1]) == ["a", "b", "c"]
    assert value("wva_fetcher_snapshots_total", status="partial") - published == 5
    await fetcher.aclose()


def test_tracked_targets_share_their_repeated_strings() -> None:
    tracker = Tracker()
    for name in ("a", "b"):
        decoded = messages.targets_decoder.decode(messages.encode(target(name)))
        assert isinstance(decoded, Target)
        tracker.put(decoded)
    a, b = tracker.get("ns", "a"), tracker.get("ns", "b")
    assert a is not None and b is not None
    assert a.namespace is b.namespace and a.model_id is b.model_id and a.pods[0].phase is b.pods[0].phase
