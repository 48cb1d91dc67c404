"""`wva lab`: run autoscaling policies on a trace or a scenario in simulated time and compare them.

Prints a table (and, with `--out DIR`, writes `lab.json` and `lab-report.html`); progress goes to
the terminal's stderr only. docs/lab.md describes the model, the policies and every option.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Final

import msgspec
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from services.lab import LabError, report, runner, traffic
from services.lab import fleet as fleets
from services.lab.settings import Settings, Timing
from services.sandbox import arrivals, scenario
from shared.settings import duration

HELP: Final = "compare wva with HPA, KEDA and an oracle on a trace or scenario, in simulated time"
SCENARIOS: Final = Path(scenario.__file__).parent / "scenarios"
# The lab's own scenarios (lab-spike, lab-diurnal): traffic shapes at a scale a 60 s start-up needs, run
# on the lab's default fleet unless --fleet says otherwise.
LAB_SCENARIOS: Final = Path(__file__).parent / "scenarios"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--trace", help="a trace CSV (time, prompt tokens, output tokens), or azure-conv (default)"
    )
    source.add_argument(
        "--scenario",
        help="a scenario YAML, or the name of a shipped one: the sandbox's (ci, default, spike, …) or the "
        "lab's own on its default fleet (lab-spike, lab-diurnal)",
    )
    parser.add_argument(
        "--fleet", type=Path, help="fleet YAML (default: the shipped A100/H100 fleet; a scenario's own)"
    )
    parser.add_argument(
        "--rate-scale", type=float, default=1.0, help="compress time by this factor (2: twice the rate)"
    )
    parser.add_argument(
        "--window", help="simulate a slice: LENGTH (10m) or START+LENGTH (20m+10m), simulated time"
    )
    parser.add_argument(
        "--policy", action="append", default=[], metavar="POLICY",
        help=f"repeatable: {', '.join(runner.ALL)}, wva:FILE or NAME=wva:FILE (default: all six)",
    )  # fmt: skip
    parser.add_argument("--slo-ttft", default="2s", help="time-to-first-token target (default 2s)")
    parser.add_argument("--slo-itl", default="100ms", help="mean inter-token latency target (default 100ms)")
    parser.add_argument(
        "--request-timeout", default="60s", help="a request waiting longer at the gateway fails"
    )
    d = Timing()
    for flag, default in (
        ("--scrape-interval", d.scrape_interval),
        ("--fetch-interval", d.fetch_interval),
        ("--rate-window", d.rate_window),
        ("--reconcile-interval", d.reconcile_interval),
        ("--stabilization", d.stabilization),
    ):
        parser.add_argument(flag, help=f"default {default:g}s (a scenario's timing: block first)")
    parser.add_argument(
        "--startup", help="every variant's start-up time (default: the fleet's startupSeconds)"
    )
    parser.add_argument(
        "--gateway", choices=("flow-control", "direct"), default="flow-control",
        help="flow-control (as the live sandbox): requests wait at the gateway while no replica has capacity; "
        "direct: every request goes to a ready replica at once, or fails when none is ready",
    )  # fmt: skip
    parser.add_argument("--oracle-window", default="60s", help="the oracle's planning window (default 60s)")
    parser.add_argument(
        "--warm-start", action="store_true", help="every policy starts with the oracle's first-window mix"
    )
    parser.add_argument("--seed", type=int, help="a scenario's seed instead of its own")
    parser.add_argument("--jobs", type=int, help="worker processes (default: one per core)")
    parser.add_argument("--out", type=Path, help="write lab.json and lab-report.html here")
    parser.add_argument("--quiet", action="store_true", help="no progress display")


def _seconds(flag: str, value: str, *, positive: bool = True) -> float:
    try:
        seconds = duration(value)
    except ValueError as exc:
        raise LabError(f"{flag}: {exc}") from None
    if positive and seconds <= 0:
        raise LabError(f"{flag}: must be > 0")
    return seconds


def parse_window(value: str | None) -> tuple[float, float | None] | None:
    if value is None:
        return None
    start, plus, length = value.partition("+")
    if not plus:
        return 0.0, _seconds("--window", start)
    return _seconds("--window", start, positive=False), _seconds("--window", length)


def resolve_scenario(value: str) -> Path:
    path = Path(value)
    if path.exists() or path.suffix:
        return path
    if value.startswith("lab-"):
        return LAB_SCENARIOS / f"{value.removeprefix('lab-')}.yaml"
    return SCENARIOS / f"{value}.yaml"


def build_lab(args: argparse.Namespace) -> tuple[runner.Lab, report.Context]:
    """The inputs of a run from the flags; LabError (or ScenarioError) names what is wrong."""
    window = parse_window(args.window)
    timing: dict[str, float] = {}
    if args.scenario:
        spec = scenario.load_scenario(resolve_scenario(args.scenario))
        if args.seed is not None:
            spec = msgspec.structs.replace(spec, seed=args.seed)
        offered = traffic.from_scenario(spec, rate_scale=args.rate_scale, window=window)
        path = resolve_scenario(args.scenario)
        if args.fleet:
            fleet = fleets.load_fleet(args.fleet)
        elif path.parent == LAB_SCENARIOS:
            fleet = fleets.load_fleet(fleets.DEFAULT_FLEET)
        else:
            fleet = fleets.from_scenario(spec)
        names = {"fetch": "fetch_interval", "scrape": "scrape_interval", "reconcile": "reconcile_interval",
                 "stabilization": "stabilization"}  # fmt: skip
        timing = {names[k]: v for k, v in spec.timing.given().items()}
    else:
        path = arrivals.resolve(args.trace or "azure-conv")
        offered = traffic.from_trace(path, rate_scale=args.rate_scale, window=window)
        fleet = fleets.load_fleet(args.fleet or fleets.DEFAULT_FLEET)
    if args.startup is not None:
        fleet = fleet.with_startup(_seconds("--startup", args.startup, positive=False))
    for flag in ("scrape_interval", "fetch_interval", "rate_window", "reconcile_interval", "stabilization"):
        value = getattr(args, flag)
        if value is not None:
            timing[flag] = _seconds(f"--{flag.replace('_', '-')}", value, positive=flag != "stabilization")
    settings = Settings(
        timing=Timing(**timing),
        slo_ttft=_seconds("--slo-ttft", args.slo_ttft),
        slo_itl=_seconds("--slo-itl", args.slo_itl),
        request_timeout=_seconds("--request-timeout", args.request_timeout),
        flow_control=args.gateway == "flow-control",
    )
    oracle_window = _seconds("--oracle-window", args.oracle_window)
    lab = runner.Lab(
        traffic=offered,
        fleet=fleet,
        settings=settings,
        oracle_window=oracle_window,
        warm_start=args.warm_start,
    )
    ctx = report.Context(
        traffic=offered,
        fleet=fleet,
        settings=settings,
        rate_scale=args.rate_scale,
        window=window,
        oracle_window=oracle_window,
        warm_start=args.warm_start,
        seed=args.seed,
    )
    return lab, ctx


class _Display:
    """Progress per policy on stderr: simulated time and how much faster than real time it goes."""

    def __init__(self, console: Console, *, enabled: bool) -> None:
        self.progress = Progress(
            TextColumn("{task.description:<22}"),
            BarColumn(),
            TextColumn("{task.fields[status]}"),
            console=console,
            transient=True,
            disable=not enabled,
        )
        self._tasks: dict[str, tuple[TaskID, float]] = {}

    def update(self, what: str, done: float, total: float) -> None:
        if what not in self._tasks:
            self._tasks[what] = (self.progress.add_task(what, total=total, status=""), time.monotonic())
        task, started = self._tasks[what]
        wall = max(time.monotonic() - started, 1e-6)
        status = (
            f"{done:.0f}/{total:.0f}"
            if what.startswith("oracle plan")
            else f"{done:.0f}/{total:.0f} s simulated, {done / wall:.0f}x real time"
        )
        self.progress.update(task, completed=done, status=status)


def main_run(args: argparse.Namespace, out: Console, err: Console) -> int:
    try:
        lab, ctx = build_lab(args)
        specs = runner.parse_policies(args.policy)
        runner.check(lab, specs)
    except (LabError, scenario.ScenarioError) as exc:
        print(f"wva lab: {exc}", file=sys.stderr)
        return 2
    display = _Display(err, enabled=not args.quiet and err.is_terminal)
    started = time.monotonic()
    with display.progress:
        results, plan = runner.run_all(lab, specs, jobs=args.jobs, progress=display.update)
    wall = time.monotonic() - started
    out.print(report.table(results, ctx))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "lab.json").write_text(report.to_json(results, ctx, plan))
        (args.out / "lab-report.html").write_text(report.render_html(results, ctx, plan))
        print(f"wrote {args.out / 'lab.json'} and {args.out / 'lab-report.html'}", flush=True)
    # The speed is the terminal's business only: never part of the JSON.
    simulated = ctx.traffic.duration * len(results)
    print(
        f"{len(results)} policies x {ctx.traffic.duration:.0f} s simulated in {wall:.1f} s of wall-clock time "
        f"({simulated / wall:.0f}x real time)",
        file=sys.stderr,
    )
    return 0


def run(args: argparse.Namespace) -> int:
    """Entry used by services/cli.py."""
    out = Console(width=None if sys.stdout.isatty() else 200)
    err = Console(stderr=True)
    try:
        return main_run(args, out, err)
    except KeyboardInterrupt:
        print("wva lab: interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wva lab", description=HELP)
    add_arguments(parser)
    return run(parser.parse_args(argv))
