"""``python -m bench [--smoke | --full] [--only NAME ...] [--out DIR]`` — run the benchmarks, print the
tables, write ``<mode>.json`` and ``<mode>.md`` to ``bench/results/`` (or ``--out``).

quick (default, a few minutes): core 10/1,000 VAs, memory 1,000, scaler latency 10/100, template change
10/100, fetch 10/100, the decision lab (replica model; the Azure trace at make lab's scale and its full hour).
full: core 10/1,000/10,000, memory 1,000/10,000, latency 10/1,000, template change 10/100, fetch and
invalidation 10/100/1,000, reaction time, the lab. smoke (CI, about 70 s): the smallest size of each, few
repetitions. Several replicas (``ha``): failover of the scaler and the fetcher over 20 kills with a 3 s
lease TTL and leases in the NATS bucket (full: and in Kubernetes Lease objects, and the scaler with the
default 15 s on the bucket), and the fetch cycle with 1, 2 and 3 fetcher replicas (quick: 100 VAs,
full: 1,000; smoke: one kill of the scaler on the bucket and one of the fetcher on Lease objects, 10 VAs).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench import (
    core_throughput,
    failover,
    fetch_cycle,
    fetch_replicas,
    lab,
    latency,
    memory,
    reaction,
    template_change,
)
from bench.report import RESULTS, Report, Table

NAMES = ("core", "memory", "latency", "fetch", "reaction", "lab", "ha")


@dataclass(frozen=True)
class Plan:
    core_sizes: list[int]
    core_events: int
    core_reps: int
    memory_sizes: list[int]
    memory_reps: int
    latency_sizes: list[int]
    latency_events: int
    fetch_sizes: list[int]
    fetch_reps: int
    scrape_interval: float
    invalidation_events: int
    reaction_reps: int
    template_sizes: list[int]
    template_events: int
    lab_loads: list[float]
    lab_seconds: float
    lab_reps: int
    lab_cases: list[lab.LabCase]
    failover_kills: int = 20
    # (service, lease backend, lease TTL s): one row of table 7 each
    failover_rows: tuple[tuple[str, str, float], ...] = (("scaler", "nats", 3.0), ("fetcher", "nats", 3.0))
    replicas_vas: int = 100


ALL_POLICIES = ("wva", "wva-v1", "hpa-kv", "keda-queue", "static-peak", "oracle")
# What `make lab` runs, and the whole trace at its recorded rate.
MAKE_LAB = lab.LabCase("make lab: rate scale 12, warm start", 12.0, None, ALL_POLICIES, True)
FULL_HOUR = lab.LabCase("the full hour at its own rate", 1.0, None, ALL_POLICIES, False)
SMOKE_LAB = lab.LabCase("10 simulated minutes, wva and hpa-kv", 1.0, (0.0, 600.0), ("wva", "hpa-kv"), False)

PLANS = {
    "smoke": Plan(
        [10], 2000, 2, [1000], 1, [10], 20, [10], 2, 1.0, 10, 0, [10], 10, [10.0], 60.0, 1, [SMOKE_LAB],
        failover_kills=1, failover_rows=(("scaler", "nats", 3.0), ("fetcher", "kubernetes", 3.0)), replicas_vas=10,
    ),
    "quick": Plan(
        [10, 1000],
        10000,
        5,
        [1000],
        3,
        [10, 100],
        200,
        [10, 100],
        5,
        2.0,
        50,
        2,
        [10, 100],
        50,
        [5.0, 15.0],
        600.0,
        3,
        [MAKE_LAB, FULL_HOUR],
    ),
    "full": Plan(
        [10, 1000, 10000],
        20000,
        7,
        [1000, 10000],
        5,
        [10, 1000],
        500,
        [10, 100, 1000],
        5,
        5.0,
        100,
        3,
        [10, 100],
        100,
        [5.0, 15.0],
        1800.0,
        5,
        [MAKE_LAB, FULL_HOUR],
        failover_rows=(
            ("scaler", "nats", 3.0), ("scaler", "kubernetes", 3.0), ("fetcher", "nats", 3.0),
            ("fetcher", "kubernetes", 3.0), ("scaler", "nats", 15.0),
        ),
        replicas_vas=1000,
    ),
}


def _skipped(key: str, title: str, why: str) -> Table:
    return Table(key, title, [], skipped=why)


async def _run(plan: Plan, only: set[str], report: Report) -> None:
    say = report.console.print
    if "core" in only:
        say("[bold]4. scaler core throughput …[/]")
        for t in core_throughput.run(plan.core_sizes, events=plan.core_events, reps=plan.core_reps):
            report.add(t)
    if "memory" in only:
        say("[bold]5. memory per VA …[/]")
        for t in await asyncio.to_thread(memory.run, plan.memory_sizes, reps=plan.memory_reps):
            report.add(t)
    if "latency" in only:
        say("[bold]2a. event-to-actuation latency …[/]")
        for t in await latency.run_scaler(plan.latency_sizes, events=plan.latency_events):
            report.add(t)
        say("[bold]2c. template change → fresh snapshot (watcher + fetcher) …[/]")
        try:
            for t in await template_change.run(
                plan.template_sizes,
                events=plan.template_events,
                scrape_interval=plan.scrape_interval,
                announce=say,
            ):
                report.add(t)
        except RuntimeError as exc:
            if "not found" not in str(exc):
                raise
            report.add(_skipped("latency_template", "2c. Template change → fresh snapshot", str(exc)))
    if "ha" in only:
        say("[bold]7. failover …[/]")
        for t in await failover.run(kills=plan.failover_kills, rows=plan.failover_rows):
            report.add(t)
    if "fetch" in only or "ha" in only:
        sizes = sorted({*(plan.fetch_sizes if "fetch" in only else []), *([plan.replicas_vas] if "ha" in only else [])})
        say("[bold]1. fetch cycle, 2b. invalidation latency, 8. fetch replicas …[/]")
        try:
            async with fetch_cycle.installation(sizes, scrape_interval=plan.scrape_interval, announce=say) as inst:
                if "fetch" in only:
                    fetch_inst = dataclasses.replace(inst, sizes={n: inst.sizes[n] for n in plan.fetch_sizes})
                    for t in await fetch_cycle.run(fetch_inst, reps=plan.fetch_reps):
                        report.add(t)
                    for t in await latency.run_invalidation(fetch_inst, events=plan.invalidation_events):
                        report.add(t)
                if "ha" in only:
                    for t in await fetch_replicas.run(inst, n=plan.replicas_vas, reps=plan.fetch_reps):
                        report.add(t)
        except RuntimeError as exc:
            if "not found" not in str(exc):
                raise
            report.add(_skipped("fetch_cycle", "1. Fetch cycle", str(exc)))
            report.add(_skipped("latency_invalidation", "2b. Invalidation", str(exc)))
    if "lab" in only:
        say("[bold]6. the decision lab …[/]")
        tables = await asyncio.to_thread(
            lab.run, loads=plan.lab_loads, seconds=plan.lab_seconds, reps=plan.lab_reps, cases=plan.lab_cases
        )
        for t in tables:
            report.add(t)
    if "reaction" in only:
        if plan.reaction_reps:
            say("[bold]3. reaction time …[/]")
            for t in await reaction.run(reps=plan.reaction_reps):
                report.add(t)
        else:
            report.add(
                _skipped(
                    "reaction",
                    "3. Reaction time end to end",
                    "not run in smoke mode (tens of seconds per run)",
                )
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--smoke", action="store_true", help="smallest sizes, for CI (about 70 s)")
    size.add_argument("--full", action="store_true", help="every benchmark at every size")
    parser.add_argument("--only", nargs="+", choices=NAMES, help="run only these benchmarks")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for <mode>.json and <mode>.md")
    args = parser.parse_args(argv)
    mode = "smoke" if args.smoke else "full" if args.full else "quick"
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)  # the services' own logs are not the result
    # A partial run gets its own file, so it never replaces the complete tables of its mode.
    name = mode if not args.only else f"{mode}-{'-'.join(sorted(args.only))}"
    report = Report(name, out=args.out)
    report.header()
    started = time.monotonic()
    try:
        asyncio.run(_run(PLANS[mode], set(args.only or NAMES), report))
    finally:
        json_path, md_path = report.write()
        report.console.print(f"wrote {json_path} and {md_path} in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
