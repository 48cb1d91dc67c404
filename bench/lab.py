"""Benchmark 6: the decision lab's speed.

6a. The replica model (services/sandbox/queueing.py) against the per-iteration model it replaced
    (bench/reference_replica.py, kept verbatim as the equivalence test's reference): one
    replica with the default lab fleet's A100 parameters under a seeded Poisson load of Azure-like
    requests (lognormal lengths), both given the same requests; wall time of each and the speed-up.
6b. `wva lab` on the Azure conversation trace with all six policies (what `make lab` runs, and the
    full hour at its recorded rate): wall time with one worker process per core (policies and the
    oracle's windows in parallel), and the simulated-to-wall-clock ratio (policies x simulated
    seconds / wall seconds).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench.reference_replica import ReferenceReplica
from bench.report import Table, stat
from services.lab import fleet as fleets
from services.lab import runner, traffic
from services.lab.settings import Settings
from services.sandbox import arrivals, load, queueing


@dataclass(frozen=True)
class LabCase:
    label: str
    rate_scale: float
    window: tuple[float, float | None] | None
    policies: tuple[str, ...]
    warm_start: bool


def _drive(
    make: Callable[[queueing.ServerParams], queueing.Replica | ReferenceReplica], rps: float, seconds: float
) -> float:
    params = fleets.load_fleet(fleets.DEFAULT_FLEET).variants[0].server
    prompt = queueing.LogNormal(median=800, sigma=0.8, min=10, max=14000)
    output = queueing.LogNormal(median=150, sigma=0.8, min=5, max=1000)
    lengths = random.Random(2)
    started = time.perf_counter()
    replica = make(params)
    for i, t in enumerate(load.poisson_arrivals(load.Constant(rps=rps), seed=1, end=seconds)):
        replica.submit(
            queueing.Request(
                arrival=t, input_tokens=prompt.sample(lengths), output_tokens=output.sample(lengths), id=i
            )
        )
    replica.advance(seconds + 3600)
    return time.perf_counter() - started


def replica_model(*, loads: Sequence[float], seconds: float, reps: int) -> Table:
    table = Table(
        "lab_replica_model",
        "6a. Replica model: event-skipping vs one loop turn per iteration (one A100 replica)",
        ["load req/s", "simulated s", "per-iteration s", "event-skipping s", "speed-up"],
    )
    for rps in loads:
        slow = stat([_drive(ReferenceReplica, rps, seconds) for _ in range(reps)])
        fast = stat([_drive(queueing.Replica, rps, seconds) for _ in range(reps)])
        table.add([rps, seconds, slow, fast, f"{slow.median / fast.median:.1f}x"], rps=rps, seconds=seconds,
                  reference=slow, fast=fast, speedup=slow.median / fast.median)  # fmt: skip
    table.notes.append(
        "Both models give identical results (tests/unit/sandbox/test_queueing_equivalence.py)."
    )
    return table


def lab_runs(cases: Sequence[LabCase]) -> Table:
    table = Table(
        "lab_azure",
        "6b. wva lab on the Azure conversation trace (all processes of one run)",
        ["run", "policies", "requests", "simulated s", "wall s", "sim : wall"],
    )
    fleet = fleets.load_fleet(fleets.DEFAULT_FLEET)
    for case in cases:
        offered = traffic.from_trace(
            arrivals.resolve("azure-conv"), rate_scale=case.rate_scale, window=case.window
        )
        lab = runner.Lab(traffic=offered, fleet=fleet, settings=Settings(), warm_start=case.warm_start)
        started = time.perf_counter()
        results, _ = runner.run_all(lab, runner.parse_policies(list(case.policies)))
        wall = time.perf_counter() - started
        simulated = offered.duration * len(results)
        table.add([case.label, len(results), len(offered.arrivals), round(offered.duration), wall,
                   f"{simulated / wall:.0f} : 1"], label=case.label, policies=list(case.policies),
                  requests=len(offered.arrivals), simulated_s=offered.duration, wall_s=wall,
                  ratio=simulated / wall)  # fmt: skip
    table.notes.append(
        "sim : wall = policies x simulated seconds / wall seconds, worker processes = cores (2 here); "
        "the oracle's per-window search is included."
    )
    return table


def run(*, loads: Sequence[float], seconds: float, reps: int, cases: Sequence[LabCase]) -> list[Table]:
    return [replica_model(loads=loads, seconds=seconds, reps=reps), lab_runs(cases)]
