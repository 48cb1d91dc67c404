"""Prometheus as the lab models it: extrapolated rate() with worked numbers, the 5 s discovery
throttle, scrape phases, staleness, and the fetcher's snapshot built by its own assembly."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.lab import observation
from services.sandbox import queueing
from shared.messages import PodRef, Target


def _series(values: list[float], times: list[float]) -> observation.Prometheus:
    prom = observation.Prometheus(scrape_interval=10.0)
    feed = iter(values)
    prom.discover({"pod": lambda t: {"c": next(feed)}}, now=0.0)
    for t in times:
        prom.scrape("pod", t)
    return prom


@pytest.mark.parametrize(
    ("values", "at", "window", "expected"),
    [
        # Samples at 10..40 of 100..130 over [5, 45]: 30 over 30 s, extrapolated 5 s each way: 40/40 = 1.0.
        ([100, 110, 120, 130], 45.0, 40.0, 1.0),
        # The same from 0: the zero point is 0 s before the first sample, so no extrapolation to the
        # start: 30 x (30 + 0 + 5) / 30 / 40 = 0.875.
        ([0, 10, 20, 30], 45.0, 40.0, 0.875),
        # Over [0, 60]: start 10 s away (< 1.1 x 10, extrapolated), end 20 s away (half an interval):
        # 30 x (30 + 10 + 5) / 30 / 60 = 0.75.
        ([100, 110, 120, 130], 60.0, 60.0, 0.75),
        # A counter reset (130 -> 5) adds the value before it: 15 - 100 + 120 = 35 -> x 40/30 / 40.
        ([100, 120, 5, 15], 45.0, 40.0, 35 * 40 / 30 / 40),
    ],
)
def test_rate_is_prometheus_extrapolated_rate(
    values: list[float], at: float, window: float, expected: float
) -> None:
    prom = _series(values, [10.0, 20.0, 30.0, 40.0])
    assert prom.rate("pod", "c", at, window) == pytest.approx(expected)


def test_rate_needs_two_samples_in_the_window_and_instant_takes_the_latest() -> None:
    prom = _series([1, 2, 3, 4], [10.0, 20.0, 30.0, 40.0])
    assert prom.rate("pod", "c", 45.0, 10.0) is None  # only the sample at 40 is in [35, 45]
    assert prom.instant("pod", "c", 39.9) == 3
    assert prom.instant("pod", "c", 9.9) is None
    assert prom.instant("pod", "c", 40.0 + observation.LOOKBACK + 1) is None  # older than the lookback
    assert prom.instant("pod", "missing", 40.0) is None


def test_targets_start_at_their_phase_after_discovery_and_go_stale_when_dropped() -> None:
    prom = observation.Prometheus(scrape_interval=15.0)
    started = prom.discover({"a": lambda t: {"g": 1.0}}, now=5.0)
    ((name, first),) = started
    phase = prom.phase("a")
    assert name == "a" and 5.0 <= first < 20.0 and (first - phase) % 15.0 == pytest.approx(0.0, abs=1e-9)
    assert prom.scrape("a", first) == first + 15.0
    assert prom.discover({"a": lambda t: {"g": 1.0}}, now=10.0) == []  # known: not started again
    prom.discover({}, now=first + 5.0)  # dropped: stale from then on
    assert prom.instant("a", "g", first + 1.0) == 1.0
    assert prom.instant("a", "g", first + 5.0) is None
    assert prom.scrape("a", first + 15.0) is None  # its scrape loop ends


def test_a_failed_scrape_records_nothing() -> None:
    prom = observation.Prometheus(scrape_interval=1.0)
    prom.discover({"gone": lambda t: {}}, now=0.0)
    assert prom.scrape("gone", 1.0) == 2.0
    assert prom.instant("gone", "g", 1.5) is None and prom.scrapes == 0


def test_snapshot_is_the_fetchers_assembly_of_what_prometheus_answers() -> None:
    replica = queueing.Replica(queueing.ServerParams())
    for i in range(3):
        replica.submit(queueing.Request(arrival=0.1 * i, input_tokens=400, output_tokens=400, id=i))
    prom = observation.Prometheus(scrape_interval=1.0)
    prom.discover({"pod-a": lambda t: observation.pod_metrics(_at(replica, t))}, now=0.0)
    for t in (1.0, 2.0, 3.0):
        prom.scrape("pod-a", t)
    target = Target(
        namespace="llm", name="va", at=_dt(0), model_id="m", deployment_generation=3, spec_replicas=2,
        pods=(PodRef(name="pod-a", ready=True), PodRef(name="pod-b", ready=False)),
    )  # fmt: skip
    snap = observation.snapshot(target, prom, at=3.5, rate_window=15.0, epoch=1_700_000_000.0)
    # pod-b (starting) has no series: a partial snapshot that names it, as the fetcher publishes.
    assert snap.status == "partial" and "pod-b" in snap.reason
    assert snap.deployment_generation == 3 and snap.collected_at == _dt(1_700_000_003.5)
    (a,) = snap.replicas
    assert a.pod == "pod-a" and a.running == 3.0 and a.waiting == 0.0
    assert a.kv_cache_usage == pytest.approx(replica.kv_cache_usage)
    assert a.num_gpu_blocks == 1024 and a.block_size == 16


def _at(replica: queueing.Replica, t: float) -> queueing.Replica:
    replica.advance(t)
    return replica


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)
