"""A lab run's settings: the SLO, the gateway, and the intervals of the observation path and of the
controllers (docs/lab.md, "Options")."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True)
class Timing:
    """Intervals of the observation path and the controllers (seconds)."""

    scrape_interval: float = 15.0
    fetch_interval: float = 15.0
    fetch_start: float = 0.0  # the fetcher's first cycle (a live run's phase, to replay it)
    rate_window: float = 60.0
    reconcile_interval: float = 30.0
    stabilization: float = 120.0
    hpa_sync: float = 15.0
    keda_polling: float = 30.0
    discovery_interval: float = 5.0
    discovery_start: float | None = None  # Prometheus' first discovery tick (None: one interval in)
    dispatch_interval: float = 0.05


@dataclass(frozen=True, kw_only=True)
class Settings:
    timing: Timing = field(default_factory=Timing)
    slo_ttft: float = 2.0
    slo_itl: float = 0.1
    request_timeout: float = 60.0
    flow_control: bool = True
    termination_grace: float = 30.0  # a deleted pod's terminationGracePeriodSeconds (Kubernetes' default)
    drain_limit: float = 3600.0  # how long after the traffic ends requests may still be finishing
