"""oracle: a clairvoyant floor, and the search static-peak shares with it (docs/lab.md).

The traffic is cut into windows (60 s of simulated time by default). For each window, `cheapest_mix`
finds the cheapest replica mix (within every variant's bounds) under which every request of the window
meets the SLO when the window is simulated alone — its arrivals on that many Ready replicas, nothing
carried over. Mixes are tried from the cheapest up; a mix that is no larger, variant by variant, than
one that already failed is skipped without a run (more replicas never hurt), and a run stops at the
first miss. When no mix within the bounds works, the window gets every variant at its maximum.

The `Oracle` policy provisions each window's mix `startupSeconds` ahead, so its pods are Ready when
the window starts, and releases replicas when the window that needed them ends: at any time each
variant has the most any window being provisioned or served then asks for. It sees the future and
pays for nothing it does not need, so no real policy can be cheaper at the same attainment — the
floor to measure against (its own attainment can fall short of 100 %: load carried over from one
window to the next, and the requests of pods it deletes, are not in the per-window runs).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from services.lab import fleet as fleets
from services.lab import scoring, simulation
from services.lab.policies.base import Sim
from services.lab.policies.static_peak import Static
from services.lab.settings import Settings
from services.lab.traffic import Arrival, Traffic

Mix = tuple[int, ...]  # replicas per variant, in fleet order


def mix_cost(fleet: fleets.Fleet, mix: Mix) -> float:
    return sum(n * v.cost_per_hour for n, v in zip(mix, fleet.variants, strict=True))


def as_mapping(fleet: fleets.Fleet, mix: Mix) -> dict[str, int]:
    return {v.name: n for v, n in zip(fleet.variants, mix, strict=True)}


MAX_MIXES = 100_000  # more than this and the search would take hours: refuse up front


def mix_count(fleet: fleets.Fleet) -> int:
    return math.prod(v.max_replicas - v.min_replicas + 1 for v in fleet.variants)


def candidates(fleet: fleets.Fleet) -> list[Mix]:
    """Every mix within the bounds with at least one replica, cheapest first (then fewest replicas)."""
    ranges = [range(v.min_replicas, v.max_replicas + 1) for v in fleet.variants]
    mixes = [m for m in itertools.product(*ranges) if sum(m) > 0]
    return sorted(mixes, key=lambda m: (mix_cost(fleet, m), sum(m), m))


def window_traffic(traffic: Traffic, start: float, length: float) -> Traffic:
    arrivals = tuple(
        Arrival(t=a.t - start, input_tokens=a.input_tokens, output_tokens=a.output_tokens)
        for a in traffic.arrivals
        if start <= a.t < start + length
    )
    return Traffic(arrivals=arrivals, duration=length, source=f"{traffic.source} [{start:g}s, +{length:g}s)")


def meets(window: Traffic, fleet: fleets.Fleet, mix: Mix, settings: Settings) -> bool:
    """Does every request of the window meet the SLO on this mix, simulated alone?"""
    policy = Static("mix", as_mapping(fleet, mix))
    run = simulation.run(
        traffic=window,
        fleet=fleet,
        policy=policy,
        settings=settings,
        sample_interval=1.0,
        abort=scoring.first_miss(settings),
    )
    log = run.log
    return not run.aborted and all(scoring.meets_slo(log, i, settings) for i in range(len(log.outcome)))


def cheapest_mix(window: Traffic, fleet: fleets.Fleet, settings: Settings) -> tuple[Mix, int]:
    """The window's cheapest mix that meets the SLO, and how many runs it took to find it."""
    largest = tuple(v.max_replicas for v in fleet.variants)
    failed: list[Mix] = []
    runs = 0
    for mix in candidates(fleet):
        if any(all(m <= f for m, f in zip(mix, bad, strict=True)) for bad in failed):
            continue
        runs += 1
        if meets(window, fleet, mix, settings):
            return mix, runs
        failed.append(mix)
    return largest, runs


@dataclass(frozen=True, kw_only=True)
class Plan:
    """The oracle's mix per window."""

    window: float
    mixes: list[Mix]
    runs: int = 0  # simulations the search needed


def windows(traffic: Traffic, window: float) -> list[Traffic]:
    n = max(1, math.ceil(traffic.duration / window))
    return [window_traffic(traffic, k * window, window) for k in range(n)]


def plan_window(args: tuple[Traffic, fleets.Fleet, Settings]) -> tuple[Mix, int]:
    """One window's search (a top-level function, so a process pool can run windows in parallel)."""
    window, fleet, settings = args
    return cheapest_mix(window, fleet, settings)


@dataclass
class Oracle:
    plan: Plan
    name: str = "oracle"
    observes: bool = False
    _schedule: list[tuple[float, dict[str, int]]] = field(default_factory=list)

    def initial(self, fleet: fleets.Fleet, traffic: Traffic) -> Mapping[str, int] | None:
        self._schedule = schedule(self.plan, fleet)
        return self._schedule[0][1]

    def start(self, sim: Sim) -> None:
        for at, mix in self._schedule[1:]:
            sim.at(at, lambda mix=mix: self._apply(sim, mix))  # type: ignore[misc]

    @staticmethod
    def _apply(sim: Sim, mix: Mapping[str, int]) -> None:
        for name, replicas in mix.items():
            sim.scale(name, replicas)


def schedule(plan: Plan, fleet: fleets.Fleet) -> list[tuple[float, dict[str, int]]]:
    """(time, mix) at 0 and at every window start and provisioning point, as described above."""
    w = plan.window
    points = {0.0}
    for m in range(len(plan.mixes)):
        points.add(m * w)
        for v in fleet.variants:
            points.add(max(0.0, m * w - v.startup_seconds))
    out: list[tuple[float, dict[str, int]]] = []
    for t in sorted(points):
        mix = {}
        for k, v in enumerate(fleet.variants):
            wanted = [
                plan.mixes[m][k]
                for m in range(len(plan.mixes))
                if m * w - v.startup_seconds <= t < (m + 1) * w
            ]
            mix[v.name] = max(wanted, default=plan.mixes[-1][k])
        if not out or out[-1][1] != mix:
            out.append((t, mix))
    return out


def peak_mix(plan: Plan, fleet: fleets.Fleet) -> dict[str, int]:
    """static-peak's mix: the plan's costliest window mix — what the trace's peak needs."""
    best = max(plan.mixes, key=lambda m: (mix_cost(fleet, m), sum(m), m))
    return as_mapping(fleet, best)
