"""The watcher's Prometheus metrics (served on ``/metrics`` by the runner)."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge

WATCH_RESTARTS: Final = Counter(
    "wva_watcher_watch_restarts_total",
    "Watch streams started again, by kind and reason (closed: the stream ended and resumes from its "
    "resourceVersion; expired: 410 Gone, re-listed; error: connection error, 5xx or 429, after a backoff)",
    ["kind", "reason"],
)
EVENTS: Final = Counter(
    "wva_watcher_events_total", "Watch events processed, by kind and event type", ["kind", "type"]
)
PUBLISHED: Final = Counter(
    "wva_watcher_published_total", "Messages the watcher published (acked by JetStream), by message kind", ["kind"]
)
TARGETS_PUBLISHED: Final = Counter(
    "wva_watcher_targets_published_total", "Target and TargetDeleted messages queued because their content changed"
)
INVALIDATIONS: Final = Counter(
    "wva_watcher_invalidations_total", "Invalidations queued for publishing, by reason", ["reason"]
)
MANAGED_VAS: Final = Gauge("wva_watcher_managed_vas", "VariantAutoscalings this watcher currently manages")
OUTBOX_PENDING: Final = Gauge(
    "wva_watcher_outbox_pending", "Messages waiting to be published (latest state per VA while NATS is away)"
)
PUBLISH_FAILURES: Final = Counter(
    "wva_watcher_publish_failures_total", "Publishes that failed and were kept for a retry"
)
