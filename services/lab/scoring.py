"""The figures of a run (pure): SLO attainment, latency percentiles, failures, GPU cost, replica-minutes,
scaling actions, time to the first scale-up after each load rise, and the series the charts draw.

- A request meets the SLO when it was served with a TTFT (arrival at the gateway -> first token,
  queueing included) of at most `slo_ttft` and a mean inter-token latency ((e2e - TTFT) / (output
  tokens - 1)) of at most `slo_itl`; a failed request (timed out at the gateway, lost with a deleted
  pod, refused, unfinished) misses. Attainment = requests meeting the SLO / requests offered.
- Latency percentiles are nearest-rank, over served requests.
- GPU cost = sum over pods of their lifetime (creation to deletion, within the traffic's duration) x
  the variant's cost per replica-hour; replica-minutes likewise, per variant.
- A load rise starts at a window (1/20 of the run, between 1 s and 60 s) whose arrival rate is at
  least 20 % above the previous window's and higher by at least 10 % of the busiest window's rate;
  rising windows in a row are one rise. The reaction to a rise is the time from its start to the first
  increase of any variant's spec replicas before the next rise (None: no scale-up in that time).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from services.lab.cluster import FAILURES, RequestLog
from services.lab.settings import Settings
from services.lab.simulation import Run
from services.lab.traffic import Traffic
from services.sandbox.report import percentile

CHART_BUCKETS = 120


def meets_slo(log: RequestLog, index: int, settings: Settings) -> bool:
    if log.outcome[index] != "served":
        return False
    ttft, e2e = log.ttft[index], log.e2e[index]
    tokens = log.arrivals[index].output_tokens
    itl = (e2e - ttft) / (tokens - 1) if tokens > 1 else 0.0
    return ttft <= settings.slo_ttft and itl <= settings.slo_itl


def first_miss(settings: Settings) -> Callable[[RequestLog], bool]:
    """An `abort` for `simulation.run`: stop at the first request that misses the SLO (for searches)."""
    checked = [0]

    def abort(log: RequestLog) -> bool:
        i = checked[0]
        for j in range(i, len(log.outcome)):
            if log.outcome[j] in FAILURES:
                return True
        while i < len(log.outcome) and log.outcome[i] != "":
            if not meets_slo(log, i, settings):
                return True
            i += 1
        checked[0] = i
        return False

    return abort


@dataclass(frozen=True, kw_only=True)
class VariantFigures:
    name: str
    accelerator: str
    cost_per_hour: float
    replica_minutes: float
    gpu_cost: float
    scaling_actions: int
    max_replicas: int  # the highest spec reached
    served: int


@dataclass(frozen=True, kw_only=True)
class PolicyResult:
    policy: str
    requests: int
    served: int
    slo_met: int
    attainment: float
    failed: dict[str, int]
    ttft_p50: float | None
    ttft_p95: float | None
    ttft_p99: float | None
    itl_p50: float | None
    itl_p99: float | None
    gpu_cost: float
    replica_minutes: float
    scaling_actions: int
    first_scale_up: float | None  # time of the first increase of any variant
    reactions: list[float | None]  # per load rise
    variants: list[VariantFigures]
    end: float  # simulated time the run ended (after the last request finished)
    events: int
    # Filled in once the oracle's result is known.
    cost_vs_oracle: float | None = None
    attainment_vs_oracle: float | None = None
    # Series for the charts: (t, spec per variant) at every change, and the p95 TTFT per bucket.
    replicas: list[tuple[float, list[int]]] = field(default_factory=list)
    ttft_p95_series: list[float | None] = field(default_factory=list)

    @property
    def failed_total(self) -> int:
        return sum(self.failed.values())


def load_rises(traffic: Traffic) -> list[float]:
    """Start times of the load rises (see the module docstring)."""
    width = max(1.0, min(60.0, traffic.duration / 20)) if traffic.duration > 0 else 1.0
    n = max(1, math.ceil(traffic.duration / width))
    counts = [0] * n
    for a in traffic.arrivals:
        counts[min(n - 1, int(a.t // width))] += 1
    peak = max(counts)
    rises: list[float] = []
    rising = False
    for k in range(1, n):
        up = counts[k] >= 1.2 * counts[k - 1] and counts[k] - counts[k - 1] >= 0.1 * peak and counts[k] > 0
        if up and not rising:
            rises.append(k * width)
        rising = up
    return rises


def offered_load(traffic: Traffic, buckets: int = CHART_BUCKETS) -> tuple[float, list[float]]:
    """(bucket width, requests per second in each bucket)."""
    width = traffic.duration / buckets if traffic.duration > 0 else 1.0
    counts = [0] * buckets
    for a in traffic.arrivals:
        counts[min(buckets - 1, int(a.t // width))] += 1
    return width, [c / width for c in counts]


def score(run: Run, rises: Sequence[float]) -> PolicyResult:
    log, settings, fleet = run.log, run.settings, run.fleet
    n = len(log.outcome)
    served = [i for i in range(n) if log.outcome[i] == "served"]
    met = sum(1 for i in served if meets_slo(log, i, settings))
    failed: dict[str, int] = dict.fromkeys(FAILURES, 0)
    for outcome in log.outcome:
        if outcome in failed:
            failed[outcome] += 1
    ttfts = [log.ttft[i] for i in served]
    itls = [
        (log.e2e[i] - log.ttft[i]) / (log.arrivals[i].output_tokens - 1)
        for i in served
        if log.arrivals[i].output_tokens > 1
    ]
    variants = []
    for k, v in enumerate(fleet.variants):
        seconds = run.replica_seconds[v.name]
        variants.append(
            VariantFigures(
                name=v.name,
                accelerator=v.accelerator,
                cost_per_hour=v.cost_per_hour,
                replica_minutes=seconds / 60,
                gpu_cost=seconds / 3600 * v.cost_per_hour,
                scaling_actions=sum(1 for s in run.scalings if s.variant == v.name),
                max_replicas=max(
                    [s.spec[k] for s in run.samples] + [s.after for s in run.scalings if s.variant == v.name]
                ),
                served=sum(1 for i in served if log.variant[i] == v.name),
            )
        )
    ups = [s.t for s in run.scalings if s.after > s.before]
    return PolicyResult(
        policy=run.policy,
        requests=n,
        served=len(served),
        slo_met=met,
        attainment=met / n if n else 1.0,
        failed=failed,
        ttft_p50=percentile(ttfts, 50),
        ttft_p95=percentile(ttfts, 95),
        ttft_p99=percentile(ttfts, 99),
        itl_p50=percentile(itls, 50),
        itl_p99=percentile(itls, 99),
        gpu_cost=sum(v.gpu_cost for v in variants),
        replica_minutes=sum(v.replica_minutes for v in variants),
        scaling_actions=len(run.scalings),
        first_scale_up=min(ups, default=None),
        reactions=reactions(ups, rises),
        variants=variants,
        end=run.end,
        events=run.events,
        replicas=replica_steps(run),
        ttft_p95_series=ttft_series(run),
    )


def reactions(ups: Sequence[float], rises: Sequence[float]) -> list[float | None]:
    out: list[float | None] = []
    for k, start in enumerate(rises):
        stop = rises[k + 1] if k + 1 < len(rises) else math.inf
        first = next((t for t in sorted(ups) if start <= t < stop), None)
        out.append(None if first is None else first - start)
    return out


def replica_steps(run: Run) -> list[tuple[float, list[int]]]:
    """Spec replicas per variant (fleet order): at 0 and after every scaling."""
    names = [v.name for v in run.fleet.variants]
    current = list(run.samples[0].spec) if run.samples else [0] * len(names)
    if run.scalings:
        # The first sample may already include a scaling done at t=0; rebuild from the scalings.
        first = {s.variant: s.before for s in reversed(run.scalings)}
        current = [first.get(name, current[k]) for k, name in enumerate(names)]
    steps = [(0.0, list(current))]
    for s in run.scalings:
        current[names.index(s.variant)] = s.after
        steps.append((s.t, list(current)))
    return steps


def ttft_series(run: Run, buckets: int = CHART_BUCKETS) -> list[float | None]:
    """p95 TTFT of the served requests arriving in each bucket."""
    duration = run.traffic.duration
    width = duration / buckets if duration > 0 else 1.0
    per: list[list[float]] = [[] for _ in range(buckets)]
    log = run.log
    for i, outcome in enumerate(log.outcome):
        if outcome == "served":
            per[min(buckets - 1, int(log.arrivals[i].t // width))].append(log.ttft[i])
    return [percentile(values, 95) for values in per]


def against_oracle(results: list[PolicyResult], oracle: str = "oracle") -> list[PolicyResult]:
    """Each result with its cost and attainment as ratios to the oracle's (when one ran)."""
    base = next((r for r in results if r.policy == oracle), None)
    if base is None:
        return results
    out = []
    for r in results:
        cost = r.gpu_cost / base.gpu_cost if base.gpu_cost > 0 else None
        attainment = r.attainment / base.attainment if base.attainment > 0 else None
        out.append(dataclasses.replace(r, cost_vs_oracle=cost, attainment_vs_oracle=attainment))
    return out
