"""The metrics cache: expiry from collection time, invalidation, cleanup, concurrent use."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from services.fetcher import cache as caching

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def test_keys_follow_the_seed() -> None:
    assert caching.allocation_key("ns", "va") == "allocation:ns/va"


def test_entries_expire_at_collection_time_plus_ttl_not_insertion_time() -> None:
    clock = Clock()
    cache = caching.MemoryCache(30, clock=clock)
    key = caching.allocation_key("ns", "va")
    clock.now = T0 + timedelta(seconds=20)
    cache.set(key, "v", collected_at=T0)  # already 20 s old when stored
    entry = cache.get(key)
    assert entry is not None and entry.age(clock.now) == timedelta(seconds=20)
    clock.now = T0 + timedelta(seconds=29.9)
    assert cache.get(key) is not None
    clock.now = T0 + timedelta(seconds=30)
    assert cache.get(key) is None


def test_older_data_never_replaces_newer() -> None:
    cache = caching.MemoryCache(30, clock=Clock())
    key = caching.allocation_key("ns", "va")
    cache.set(key, "new", collected_at=T0 + timedelta(seconds=5))
    cache.set(key, "old", collected_at=T0)
    entry = cache.get(key)
    assert entry is not None and entry.value == "new"


def test_prefix_invalidation_and_cleanup() -> None:
    clock = Clock()
    cache = caching.MemoryCache(30, clock=clock)
    cache.set(caching.allocation_key("ns", "a"), 1, collected_at=T0)
    cache.set(caching.allocation_key("ns", "b"), 2, collected_at=T0 + timedelta(seconds=20))
    cache.set(caching.allocation_key("other", "c"), 3, collected_at=T0)
    assert cache.invalidate_prefix("allocation:other/") == 1
    clock.now = T0 + timedelta(seconds=31)
    assert cache.cleanup() == 1 and len(cache) == 1
    assert cache.delete(caching.allocation_key("ns", "b")) and len(cache) == 0


def test_concurrent_writers_and_readers_from_threads() -> None:
    cache = caching.MemoryCache(30)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for j in range(500):
                key = caching.allocation_key("ns", f"va-{(i + j) % 20}")
                cache.set(key, j, collected_at=datetime.now(UTC))
                cache.get(key)
                if j % 50 == 0:
                    cache.invalidate_prefix("allocation:ns/va-1")
                    cache.cleanup()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(cache) <= 20


def test_noop_cache_never_hits() -> None:
    cache = caching.NoOpCache()
    cache.set(caching.allocation_key("ns", "va"), 1, collected_at=T0)
    assert cache.get(caching.allocation_key("ns", "va")) is None and len(cache) == 0


def test_evictions_are_reported_by_reason() -> None:
    clock = Clock()
    evicted: list[tuple[str, int]] = []
    cache = caching.MemoryCache(30, clock=clock, on_evict=lambda reason, n: evicted.append((reason, n)))
    for va in ("a", "b", "c", "d"):
        cache.set(caching.allocation_key("ns", va), va, collected_at=T0)
    cache.set(caching.allocation_key("ns", "late"), "late", collected_at=T0 + timedelta(seconds=20))
    assert cache.invalidate_prefix("allocation:ns/a") == 1
    assert cache.delete(caching.allocation_key("ns", "b"), reason="deleted")
    assert not cache.delete(caching.allocation_key("ns", "b"))  # nothing there: nothing evicted
    clock.now = T0 + timedelta(seconds=30)
    assert cache.get(caching.allocation_key("ns", "c")) is None  # found expired on read
    assert cache.cleanup() == 1  # "d"; "late" lives on
    assert evicted == [("invalidated", 1), ("deleted", 1), ("expired", 1), ("expired", 1)]
    assert len(cache) == 1


def test_evictions_are_counted_in_the_fetchers_metrics() -> None:
    from prometheus_client import REGISTRY

    def count(reason: str) -> float:
        return REGISTRY.get_sample_value("wva_fetcher_cache_evictions_total", {"reason": reason}) or 0.0

    before = {r: count(r) for r in ("expired", "invalidated", "deleted")}
    clock = Clock()
    cache = caching.MemoryCache(30, clock=clock)  # the default on_evict
    for va in ("a", "b", "c"):
        cache.set(caching.allocation_key("ns", va), va, collected_at=T0)
    cache.delete(caching.allocation_key("ns", "a"))
    cache.delete(caching.allocation_key("ns", "b"), reason="deleted")
    clock.now = T0 + timedelta(seconds=31)
    cache.cleanup()
    assert {r: count(r) - before[r] for r in before} == {"expired": 1, "invalidated": 1, "deleted": 1}


def test_a_cached_snapshot_reads_back_equal_and_encodes_to_the_same_bytes() -> None:
    from shared import messages

    replicas = (
        messages.ReplicaMetrics(pod="va-0", kv_cache_usage=0.5, waiting=0.0, running=8.0, num_gpu_blocks=1024,
                                block_size=16, generation_tokens_rate=640.0, itl_seconds=0.02),
        messages.ReplicaMetrics(pod="va-1", kv_cache_usage=-0.0, waiting=None, num_gpu_blocks=None, block_size=16),
    )  # fmt: skip
    full = messages.MetricsSnapshot(
        namespace="ns", name="va", at=T0, model_id="m", collected_at=T0, deployment_generation=3,
        template_hash="abc", status="partial", reason="one pod missing", dropped_values=2,
        allocation=messages.AllocationMetrics(arrival_rate=5.0, avg_input_tokens=None, gateway_queue=0.0),
        replicas=replicas,
    )  # fmt: skip
    odd = messages.MetricsSnapshot(  # an int where a float is expected: kept as it is, not packed
        namespace="ns", name="odd", at=T0, collected_at=T0,
        allocation=messages.AllocationMetrics(arrival_rate=5),  # type: ignore[arg-type]
    )  # fmt: skip
    empty = messages.MetricsSnapshot(namespace="ns", name="none", at=T0, collected_at=T0, status="unavailable")
    cache = caching.MemoryCache(30, clock=Clock())
    for snapshot in (full, odd, empty):
        key = caching.allocation_key("ns", snapshot.name)
        cache.set(key, snapshot, collected_at=snapshot.collected_at)
        entry = cache.get(key)
        assert entry is not None and entry.value == snapshot and entry.collected_at == T0
        assert isinstance(entry.value, messages.MetricsSnapshot)
        assert messages.encode(entry.value) == messages.encode(snapshot)
    odd_entry = cache.get(caching.allocation_key("ns", "odd"))
    assert odd_entry is not None and odd_entry.value is odd
