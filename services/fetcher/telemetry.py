"""The fetcher's own Prometheus metrics (served on ``/metrics`` by the runner)."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

QUERIES: Final = Counter(
    "wva_fetcher_queries_total", "Backend queries (PromQL queries or pod scrapes), by backend and outcome",
    ["backend", "outcome"],
)
QUERY_RETRIES: Final = Counter(
    "wva_fetcher_query_retries_total",
    "Backend queries retried after a transient failure (connection, timeout, 5xx, 429): a flaky backend",
    ["backend"],
)
QUERY_SECONDS: Final = Histogram(
    "wva_fetcher_query_duration_seconds", "Time per backend query, retries included", ["backend"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CYCLES: Final = Counter("wva_fetcher_cycles_total", "Background fetch cycles run")
CYCLE_SECONDS: Final = Histogram(
    "wva_fetcher_cycle_duration_seconds", "Duration of a background fetch cycle",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
LAST_CYCLE: Final = Gauge("wva_fetcher_last_cycle_timestamp_seconds", "When the last background cycle ended")
SNAPSHOTS: Final = Counter("wva_fetcher_snapshots_total", "Snapshots published, by status (deleted: tombstones)", ["status"])
PUBLISH_FAILURES: Final = Counter("wva_fetcher_publish_failures_total", "Snapshots that could not be published")
DROPPED: Final = Counter(
    "wva_fetcher_dropped_values_total", "NaN, infinite or negative values dropped, by field", ["field"]
)
CACHE: Final = Counter("wva_fetcher_cache_requests_total", "Cache lookups, by result", ["result"])
CACHE_EVICTIONS: Final = Counter(
    "wva_fetcher_cache_evictions_total",
    "Cache entries removed before being replaced, by reason (expired, invalidated, deleted)", ["reason"],
)
CACHE_ENTRIES: Final = Gauge("wva_fetcher_cache_entries", "Entries in the metrics cache")
TRACKED: Final = Gauge("wva_fetcher_tracked_targets", "VAs the fetcher collects for")
FETCH_REQUESTS: Final = Counter(
    "wva_fetcher_fetch_requests_total", "On-demand fetch requests, by how they were answered", ["answer"]
)
INVALIDATIONS: Final = Counter("wva_fetcher_invalidations_total", "Invalidations handled, by reason", ["reason"])
GATEWAY_FAILURES: Final = Counter(
    "wva_fetcher_gateway_failures_total",
    "Collections whose read of the inference gateway's queue failed (the queue is then unknown), by backend",
    ["backend"],
)
