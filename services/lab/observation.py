"""What the policies see: Prometheus-like scrapes and queries, and the fetcher's snapshots (pure).

Prometheus (as version 2.42 behaves, the one the sandbox runs):

- **Discovery.** New targets reach the scrape loops on a fixed grid of `discovery_interval` (5 s: the
  discovery manager's update throttle and the scrape manager's reload ticker, which start with
  Prometheus), so a pod that turns Ready is first scraped after the next discovery tick; a target that
  disappears is marked stale at the tick that drops it. Where the grid falls (`Timing.discovery_start`)
  decides how long each new replica goes unseen: up to a whole interval.
- **Scrapes.** Every target is scraped every `scrape_interval`, at its own phase (a hash of its name,
  as Prometheus spreads targets over the interval), on a grid that does not move.
- **Queries.** An instant query returns a series' latest sample at or before the query time (within
  the 5-minute lookback, unless the series went stale); `rate()` is Prometheus' extrapolated rate over
  the samples in `[t - window, t]` (counter resets corrected, extrapolation to the window's edges by at
  most half a sample interval, never below a counter's zero point). The lab keeps times as float
  seconds where Prometheus rounds them to milliseconds.

The fetcher: `snapshot` runs its queries for one VA's pods at one instant and builds the wire
snapshot with the fetcher's own pure assembly (`services.fetcher.collector.assemble`).
"""

from __future__ import annotations

import bisect
import math
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from services.fetcher import collector
from services.sandbox import queueing
from shared.messages import MetricsSnapshot, Target

LOOKBACK: Final = 300.0  # Prometheus' default --query.lookback-delta
GATEWAY_TARGET: Final = "inference-gateway"  # the gateway's /metrics: its queue size per model

Reader = Callable[[float], Mapping[str, float]]

# Series of one pod, by the PodSample field the fetcher fills from them.
GAUGES: Final = ("kv_cache_usage", "waiting", "running")
COUNTERS: Final = {
    "request_rate": "request_success_total",
    "request_prompt_tokens_rate": "request_prompt_tokens_sum",
    "request_generation_tokens_rate": "request_generation_tokens_sum",
    "generation_tokens_rate": "generation_tokens_total",
    "ttft_sum_rate": "ttft_seconds_sum",
    "ttft_count_rate": "ttft_seconds_count",
    "itl_sum_rate": "itl_seconds_sum",
    "itl_count_rate": "itl_seconds_count",
}


def pod_metrics(replica: queueing.Replica) -> dict[str, float]:
    """What a vLLM pod's /metrics says right now (the replica model must be at the scrape time)."""
    s = replica.stats
    return {
        "kv_cache_usage": replica.kv_cache_usage,
        "waiting": float(replica.num_waiting),
        "running": float(replica.num_running),
        "request_success_total": float(s.requests_succeeded),
        "request_prompt_tokens_sum": s.request_prompt_tokens.sum,
        "request_generation_tokens_sum": s.request_generation_tokens.sum,
        "generation_tokens_total": float(s.generation_tokens),
        "ttft_seconds_sum": s.ttft.sum,
        "ttft_seconds_count": float(s.ttft.count),
        "itl_seconds_sum": s.itl.sum,
        "itl_seconds_count": float(s.itl.count),
        "num_gpu_blocks": float(replica.params.num_gpu_blocks),
        "block_size": float(replica.params.block_size),
    }


@dataclass
class _Series:
    reader: Reader
    phase: float
    times: list[float] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)
    stale_at: float | None = None


class Prometheus:
    def __init__(self, *, scrape_interval: float, discovery_interval: float = 5.0) -> None:
        if scrape_interval <= 0 or discovery_interval <= 0:
            raise ValueError("scrape and discovery intervals must be > 0")
        self.scrape_interval = scrape_interval
        self.discovery_interval = discovery_interval
        self._series: dict[str, _Series] = {}
        self.scrapes = 0

    def phase(self, name: str) -> float:
        return zlib.crc32(name.encode()) / 2**32 * self.scrape_interval

    def discover(self, targets: Mapping[str, Reader], now: float) -> list[tuple[str, float]]:
        """A discovery tick with the targets that exist now; returns `(new target, first scrape time)`.

        Targets no longer listed go stale now; one that comes back is a new series set.
        """
        started: list[tuple[str, float]] = []
        for name in sorted(targets):
            series = self._series.get(name)
            if series is None or series.stale_at is not None:
                series = _Series(reader=targets[name], phase=self.phase(name))
                self._series[name] = series
                k = math.ceil((now - series.phase) / self.scrape_interval)
                started.append((name, series.phase + k * self.scrape_interval))
        for name, series in self._series.items():
            if name not in targets and series.stale_at is None:
                series.stale_at = now
        return started

    def scrape(self, name: str, now: float) -> float | None:
        """Scrape a target; returns when to scrape it next, None once it is gone."""
        series = self._series[name]
        if series.stale_at is not None:
            return None
        values = series.reader(now)
        if not values:
            return now + self.scrape_interval  # a failed scrape (the pod is gone): no samples
        self.scrapes += 1
        series.times.append(now)
        for metric, value in values.items():
            column = series.values.setdefault(metric, [])
            # A metric that appears late (a gauge set on the first decision) has no earlier samples.
            column.extend([math.nan] * (len(series.times) - 1 - len(column)))
            column.append(value)
        return now + self.scrape_interval

    def instant(self, name: str, metric: str, at: float) -> float | None:
        """The latest sample at or before `at` (None: no series, stale, or older than the lookback)."""
        series = self._series.get(name)
        if series is None or (series.stale_at is not None and series.stale_at <= at):
            return None
        i = bisect.bisect_right(series.times, at) - 1
        column = series.values.get(metric)
        if i < 0 or column is None or i >= len(column) or at - series.times[i] > LOOKBACK:
            return None
        value = column[i]
        return None if math.isnan(value) else value

    def rate(self, name: str, metric: str, at: float, window: float) -> float | None:
        """`rate(metric[window])` evaluated at `at`, as Prometheus computes it (None: < 2 samples)."""
        series = self._series.get(name)
        column = None if series is None else series.values.get(metric)
        if series is None or column is None:
            return None
        lo = bisect.bisect_left(series.times, at - window)
        hi = bisect.bisect_right(series.times, at)
        points = [
            (series.times[i], column[i]) for i in range(lo, min(hi, len(column))) if not math.isnan(column[i])
        ]
        if len(points) < 2:
            return None
        return extrapolated_rate(points, start=at - window, end=at)


def extrapolated_rate(points: list[tuple[float, float]], *, start: float, end: float) -> float:
    """Prometheus 2.42's `extrapolatedRate` for a counter, `isRate` true (promql/functions.go)."""
    first_t, first_v = points[0]
    last_t, last_v = points[-1]
    result = last_v - first_v
    previous = 0.0
    for _, v in points:
        if v < previous:
            result += previous  # a counter reset
        previous = v
    to_start = first_t - start
    to_end = end - last_t
    sampled = last_t - first_t
    average = sampled / (len(points) - 1)
    if result > 0 and first_v >= 0:
        # Counters cannot be negative: do not extrapolate past the series' zero point.
        to_zero = sampled * (first_v / result)
        to_start = min(to_start, to_zero)
    threshold = average * 1.1
    interval = sampled
    interval += to_start if to_start < threshold else average / 2
    interval += to_end if to_end < threshold else average / 2
    return result * (interval / sampled) / (end - start)


# ---------------------------------------------------------------------------- the fetcher


def pod_sample(prom: Prometheus, pod: str, *, at: float, rate_window: float) -> collector.PodSample | None:
    """The fetcher's queries for one pod at one instant (None: Prometheus has no series of it)."""
    sample = collector.PodSample()
    for gauge in GAUGES:
        setattr(sample, gauge, prom.instant(pod, gauge, at))
    for name, metric in COUNTERS.items():
        setattr(sample, name, prom.rate(pod, metric, at, rate_window))
    blocks, size = prom.instant(pod, "num_gpu_blocks", at), prom.instant(pod, "block_size", at)
    sample.num_gpu_blocks = None if blocks is None else int(blocks)
    sample.block_size = None if size is None else int(size)
    if all(getattr(sample, f) is None for f in collector.FIELDS):
        return None
    return sample


def snapshot(
    target: Target, prom: Prometheus, *, at: float, rate_window: float, epoch: float
) -> MetricsSnapshot:
    """What the fetcher publishes for `target` when it collects at `at` (seconds since the start)."""
    samples: dict[collector.PodKey, collector.PodSample] = {}
    for pod in target.pods:
        sample = pod_sample(prom, pod.name, at=at, rate_window=rate_window)
        if sample is not None:
            samples[collector.pod_key(target.namespace, pod.name)] = sample
    # The model's gateway queue, as the fetcher reads inference_extension_flow_control_queue_size.
    queued = prom.instant(GATEWAY_TARGET, "queue_size", at)
    snap, _ = collector.assemble(
        target, samples, collected_at=datetime.fromtimestamp(epoch + at, UTC), gateway_queue=queued
    )
    return snap
