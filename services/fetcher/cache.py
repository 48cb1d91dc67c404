"""The metrics cache: ``MetricsCache`` protocol, ``MemoryCache`` (TTL) and ``NoOpCache`` (disabled).

Keys follow the seed: ``allocation:<ns>/<va>`` holds a VA's latest snapshot. An entry expires at its
collection time + TTL (not at insertion time), so data that was already old when it arrived is not served as
fresh. ``MemoryCache`` is guarded by a lock and safe to use from threads as well as tasks.

Every entry removed other than by being replaced is an eviction, reported to ``on_evict`` with its
reason: ``expired`` (found expired by ``get`` or removed by ``cleanup``), ``invalidated`` (``delete`` or
``invalidate_prefix`` after a change) or ``deleted`` (its VA is gone). By default they are counted in
``wva_fetcher_cache_evictions_total``.

``MemoryCache`` keeps a snapshot packed (``services.fetcher.packing``: its figures as doubles in one
array) and rebuilds an equal one when it is read: a read costs a few microseconds, an entry about half
the memory of the message (docs/benchmarks.md, "Memory per tracked VA").
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Generic, Literal, NewType, Protocol, TypeVar

from services.fetcher import packing, telemetry
from shared.messages import MetricsSnapshot, utcnow

CacheKey = NewType("CacheKey", str)
V = TypeVar("V")

ALLOCATION_PREFIX = "allocation:"

EvictReason = Literal["expired", "invalidated", "deleted"]
OnEvict = Callable[[EvictReason, int], None]


def count_evictions(reason: EvictReason, n: int) -> None:
    telemetry.CACHE_EVICTIONS.labels(reason=reason).inc(n)


def allocation_key(namespace: str, va: str) -> CacheKey:
    return CacheKey(f"{ALLOCATION_PREFIX}{namespace}/{va}")


@dataclass(frozen=True, slots=True)
class CachedMetrics(Generic[V]):
    value: V
    collected_at: datetime
    ttl: timedelta  # the cache's own object: one entry per VA keeps no expiry time of its own

    @property
    def expires_at(self) -> datetime:
        return self.collected_at + self.ttl

    def age(self, now: datetime) -> timedelta:
        return now - self.collected_at


class MetricsCache(Protocol):
    def get(self, key: CacheKey) -> CachedMetrics[object] | None: ...

    def set(self, key: CacheKey, value: object, *, collected_at: datetime) -> None: ...

    def delete(self, key: CacheKey, *, reason: EvictReason = "invalidated") -> bool: ...

    def invalidate_prefix(self, prefix: str) -> int: ...

    def cleanup(self) -> int:
        """Remove expired entries; returns how many."""
        ...

    def __len__(self) -> int: ...


Clock = Callable[[], datetime]


class MemoryCache:
    def __init__(self, ttl: float, *, clock: Clock = utcnow, on_evict: OnEvict = count_evictions) -> None:
        self._ttl = timedelta(seconds=ttl)
        self._clock = clock
        self._on_evict = on_evict
        # a snapshot packed (its collection time is the entry's), anything else as given
        self._entries: dict[CacheKey, CachedMetrics[object] | packing.Packed] = {}
        self._lock = threading.Lock()

    def get(self, key: CacheKey) -> CachedMetrics[object] | None:
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry.collected_at + self._ttl > now:
                if isinstance(entry, CachedMetrics):
                    return entry
                return CachedMetrics(value=packing.unpack(entry), collected_at=entry.collected_at, ttl=self._ttl)
            del self._entries[key]
        self._on_evict("expired", 1)
        return None

    def set(self, key: CacheKey, value: object, *, collected_at: datetime) -> None:
        packed = (
            packing.pack(value)
            if isinstance(value, MetricsSnapshot) and value.collected_at is collected_at
            else None
        )
        entry = packed if packed is not None else CachedMetrics(value=value, collected_at=collected_at, ttl=self._ttl)
        with self._lock:
            current = self._entries.get(key)
            if current is not None and current.collected_at > collected_at:
                return  # never replace newer data with older (a slow fetch finishing late)
            self._entries[key] = entry

    def delete(self, key: CacheKey, *, reason: EvictReason = "invalidated") -> bool:
        with self._lock:
            found = self._entries.pop(key, None) is not None
        if found:
            self._on_evict(reason, 1)
        return found

    def invalidate_prefix(self, prefix: str) -> int:
        with self._lock:
            doomed = [k for k in self._entries if k.startswith(prefix)]
            for k in doomed:
                del self._entries[k]
        if doomed:
            self._on_evict("invalidated", len(doomed))
        return len(doomed)

    def cleanup(self) -> int:
        now = self._clock()
        with self._lock:
            doomed = [k for k, e in self._entries.items() if e.collected_at + self._ttl <= now]
            for k in doomed:
                del self._entries[k]
        if doomed:
            self._on_evict("expired", len(doomed))
        return len(doomed)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


class NoOpCache:
    """Caching disabled: every get misses."""

    def get(self, key: CacheKey) -> CachedMetrics[object] | None:
        return None

    def set(self, key: CacheKey, value: object, *, collected_at: datetime) -> None:
        return None

    def delete(self, key: CacheKey, *, reason: EvictReason = "invalidated") -> bool:
        return False

    def invalidate_prefix(self, prefix: str) -> int:
        return 0

    def cleanup(self) -> int:
        return 0

    def __len__(self) -> int:
        return 0
