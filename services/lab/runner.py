"""Running a lab: build the policies, plan the oracle, run every policy (in worker processes when
there are several and more than one core) and score them. Results do not depend on how many
processes ran them: every run is a pure function of its inputs.

Policies by name: `wva` (the production core, the scaler's default configuration), `wva-v1`,
`hpa-kv`, `keda-queue`, `static-peak`, `oracle`; `wva:FILE` (the core with a saturation config file,
named `wva:<file stem>`) or `NAME=wva:FILE` (named NAME), as many as wanted side by side.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import queue
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from services.lab import PolicyError, scoring, simulation, wva_policy
from services.lab import fleet as fleets
from services.lab.policies import oracle as oracles
from services.lab.policies.base import Policy
from services.lab.policies.hpa_kv import HpaKv
from services.lab.policies.keda_queue import KedaQueue
from services.lab.policies.static_peak import Static
from services.lab.settings import Settings
from services.lab.traffic import Traffic

ALL: Final = ("wva", "wva-v1", "hpa-kv", "keda-queue", "static-peak", "oracle")
Kind = Literal["wva", "hpa-kv", "keda-queue", "static-peak", "oracle"]


@dataclass(frozen=True, kw_only=True)
class PolicySpec:
    name: str
    kind: Kind
    wva: wva_policy.WvaSpec | None = None


def parse_policy(text: str) -> PolicySpec:
    """A `--policy` value (see the module docstring)."""
    name, sep, rest = text.partition("=")
    if not sep:
        name, rest = "", text
    if rest in ("wva", "wva-v1"):
        return PolicySpec(
            name=name or rest, kind="wva", wva=wva_policy.WvaSpec(name=name or rest, v1=rest == "wva-v1")
        )
    if rest in ("hpa-kv", "keda-queue", "static-peak", "oracle"):
        return PolicySpec(name=name or rest, kind=rest)  # type: ignore[arg-type]
    if rest.startswith("wva:"):
        path = Path(rest[4:])
        label = name or f"wva:{path.stem}"
        spec = wva_policy.WvaSpec(name=label, config=wva_policy.read_config(path), source=str(path))
        return PolicySpec(name=label, kind="wva", wva=spec)
    raise PolicyError(f"unknown policy {text!r}: expected one of {', '.join(ALL)}, wva:FILE or NAME=wva:FILE")


def parse_policies(texts: Sequence[str]) -> list[PolicySpec]:
    specs = [parse_policy(t) for t in (texts or ALL)]
    names = [s.name for s in specs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise PolicyError(
            f"policy names must differ; given twice: {', '.join(twice)} (name them: NAME=wva:FILE)"
        )
    return specs


@dataclass(frozen=True, kw_only=True)
class Lab:
    traffic: Traffic
    fleet: fleets.Fleet
    settings: Settings
    oracle_window: float = 60.0
    warm_start: bool = False  # every policy starts with the oracle's first-window mix


def check(lab: Lab, specs: Sequence[PolicySpec]) -> None:
    """Refuse what would run for hours: an oracle over more replica mixes than it can search."""
    if lab.warm_start or any(s.kind in ("oracle", "static-peak") for s in specs):
        count = oracles.mix_count(lab.fleet)
        if count > oracles.MAX_MIXES:
            raise PolicyError(
                f"the oracle (also behind static-peak and --warm-start) would search {count:,} replica mixes; "
                f"narrow the fleet's min/max replicas to at most {oracles.MAX_MIXES:,} mixes"
            )


def build(spec: PolicySpec, lab: Lab, plan: oracles.Plan | None) -> Policy:
    t = lab.settings.timing
    if spec.kind == "wva":
        assert spec.wva is not None
        return wva_policy.build(
            spec.wva,
            fetch_interval=t.fetch_interval,
            stabilization=t.stabilization,
            reconcile_interval=t.reconcile_interval,
        )
    if spec.kind == "hpa-kv":
        return HpaKv(spec.name)
    if spec.kind == "keda-queue":
        return KedaQueue(spec.name)
    assert plan is not None, "static-peak and the oracle need the plan"
    if spec.kind == "static-peak":
        return Static(spec.name, oracles.peak_mix(plan, lab.fleet))
    return oracles.Oracle(plan=plan, name=spec.name)


# -------------------------------------------------------------------------------- workers

Progress = Callable[[str, float, float], None]  # (what, done, total)


@dataclass(frozen=True, kw_only=True)
class _Job:
    spec: PolicySpec
    lab: Lab
    plan: oracles.Plan | None


def _run_job(job: _Job, updates: queue.Queue[tuple[str, float, float]] | None) -> scoring.PolicyResult:
    lab = job.lab
    total = lab.traffic.duration
    last = [0.0]

    def progress(now: float) -> None:
        if updates is not None and (now - last[0] >= total / 100 or now >= total):
            last[0] = now
            updates.put((job.spec.name, min(now, total), total))

    initial = None
    if lab.warm_start and job.plan is not None:
        initial = oracles.as_mapping(lab.fleet, job.plan.mixes[0])
    run = simulation.run(
        traffic=lab.traffic,
        fleet=lab.fleet,
        policy=build(job.spec, lab, job.plan),
        settings=lab.settings,
        initial=initial,
        progress=progress,
    )
    if updates is not None:
        updates.put((job.spec.name, total, total))
    return scoring.score(run, scoring.load_rises(lab.traffic))


def workers(requested: int | None, tasks: int) -> int:
    cores = os.cpu_count() or 1
    return max(1, min(tasks, requested if requested else cores))


def plan(lab: Lab, *, jobs: int, progress: Progress | None = None) -> oracles.Plan:
    """The oracle's mix for every window (windows in parallel over `jobs` processes)."""
    windows = oracles.windows(lab.traffic, lab.oracle_window)
    args = [(w, lab.fleet, lab.settings) for w in windows]
    results: list[tuple[oracles.Mix, int]] = []
    if jobs <= 1:
        for k, a in enumerate(args):
            results.append(oracles.plan_window(a))
            if progress:
                progress("oracle plan (windows)", k + 1, len(args))
    else:
        with concurrent.futures.ProcessPoolExecutor(
            jobs, mp_context=multiprocessing.get_context("spawn")
        ) as pool:
            for k, result in enumerate(pool.map(oracles.plan_window, args)):
                results.append(result)
                if progress:
                    progress("oracle plan (windows)", k + 1, len(args))
    return oracles.Plan(
        window=lab.oracle_window, mixes=[m for m, _ in results], runs=sum(r for _, r in results)
    )


def run_all(
    lab: Lab, specs: Sequence[PolicySpec], *, jobs: int | None = None, progress: Progress | None = None
) -> tuple[list[scoring.PolicyResult], oracles.Plan | None]:
    """Every policy's result, in the order given, with ratios to the oracle's."""
    needs_plan = lab.warm_start or any(s.kind in ("oracle", "static-peak") for s in specs)
    n = workers(jobs, len(specs))
    the_plan = plan(lab, jobs=workers(jobs, 1_000), progress=progress) if needs_plan else None
    job_list = [_Job(spec=s, lab=lab, plan=the_plan) for s in specs]
    if n <= 1:
        updates: queue.Queue[tuple[str, float, float]] | None = queue.Queue() if progress else None
        results = []
        for job in job_list:
            results.append(_run_job(job, updates))
            _drain(updates, progress)
        return scoring.against_oracle(results), the_plan
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        shared: queue.Queue[tuple[str, float, float]] = manager.Queue()
        with concurrent.futures.ProcessPoolExecutor(n, mp_context=context) as pool:
            futures = [pool.submit(_run_job, job, shared) for job in job_list]
            while not all(f.done() for f in futures):
                _drain(shared, progress)
                time.sleep(0.1)
            _drain(shared, progress)
            results = [f.result() for f in futures]
    return scoring.against_oracle(results), the_plan


def _drain(updates: queue.Queue[tuple[str, float, float]] | None, progress: Progress | None) -> None:
    if updates is None or progress is None:
        return
    while True:
        try:
            what, done, total = updates.get_nowait()
        except queue.Empty:
            return
        progress(what, done, total)
