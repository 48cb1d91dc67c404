"""`wva sandbox`: the whole pipeline on one machine under a load scenario (what `make demo` runs).

By default: an embedded nats-server, the emulated cluster, Prometheus when `prometheus` is on PATH
(otherwise the fetcher scrapes the pods itself), the watcher, fetcher and scaler as processes with
demo intervals, a live view, then a summary, an HTML report and a verdict (see `session.py`).

`--no-services` runs the emulated cluster alone: Kubernetes API emulator, emulated vLLM pods, router,
load generator and a Prometheus file_sd file, until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Final

from services.sandbox import cluster, pipeline, router, scenario, servers, session
from shared.settings import duration

HELP: Final = "run wva end to end on an emulated cluster under a load scenario, live, with a report"
SCENARIOS: Final = Path(__file__).parent / "scenarios"
DEFAULT_SCENARIO: Final = SCENARIOS / "default.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scenario",
        type=Path,
        default=DEFAULT_SCENARIO,
        help=f"scenario YAML, or the name of a shipped one ({', '.join(sorted(p.stem for p in SCENARIOS.glob('*.yaml')))})",
    )
    parser.add_argument(
        "--no-services", action="store_true", help="run only the emulated cluster, not the wva services"
    )
    parser.add_argument(
        "--kubeconfig-out", type=Path, default=Path("sandbox-kubeconfig.yaml"), help="kubeconfig to write"
    )
    parser.add_argument(
        "--prometheus-sd-out",
        type=Path,
        default=Path("sandbox-targets.json"),
        help="Prometheus file_sd JSON to keep up to date with the ready pods",
    )
    parser.add_argument("--no-load", action="store_true", help="create the cluster but send no requests")
    parser.add_argument("--load-scale", type=float, default=1.0, help="multiply every load profile by this")
    parser.add_argument("--duration", help="seconds (or 90s, 3m) of load instead of the scenario's")
    parser.add_argument(
        "--report", type=Path, default=Path("sandbox-report.html"), help="HTML report to write"
    )
    parser.add_argument("--no-report", action="store_true", help="write no HTML report")
    parser.add_argument(
        "--record", type=Path, help="also record the run (wva record --follow) to this JSONL file"
    )
    parser.add_argument(
        "--run-dir", type=Path, help="where logs and stores go (default: a new temp directory)"
    )
    parser.add_argument("--headless", action="store_true", help="no live view: one line per decision")
    parser.add_argument(
        "--gateway", choices=("flow-control", "direct"), default="flow-control",
        help="flow-control: requests wait at the gateway while no ready replica has capacity; direct: they "
        "go to the least-loaded ready replica at once and wait only while the model has none",
    )
    parser.add_argument("--request-timeout", default="60s", help="a request waiting longer at the gateway fails")
    parser.add_argument(
        "--replicas", type=int, default=1,
        help="run each service this many times, sharing the work through NATS leases (default 1)",
    )
    parser.add_argument(
        "--nats-cluster", type=int, default=1, choices=(1, 3),
        help="3: a three-node nats-server cluster with routes on localhost and R3 streams (default 1)",
    )
    d = pipeline.Intervals()
    # Default: the scenario's `timing`, else these demo values.
    parser.add_argument("--fetch-interval", help=f"fetcher background interval (default {d.fetch:g}s)")
    parser.add_argument("--scrape-interval", help=f"Prometheus scrape interval (default {d.scrape:g}s)")
    parser.add_argument("--reconcile-interval", help=f"scaler periodic re-evaluation (default {d.reconcile:g}s)")
    parser.add_argument("--stabilization", help=f"scaler scale-down stabilization window (default {d.stabilization:g}s)")


def resolve_scenario(value: Path) -> Path:
    """A path, or the bare name of a shipped scenario (`spike` -> scenarios/spike.yaml)."""
    if value.exists() or value.suffix:
        return value
    return SCENARIOS / f"{value}.yaml"


def options(args: argparse.Namespace) -> session.Options:
    """The run's options from the flags; ValueError names the bad flag."""
    values = {}
    for flag in ("duration", "fetch_interval", "scrape_interval", "reconcile_interval", "stabilization", "request_timeout"):
        raw = getattr(args, flag)
        if raw is None:
            continue
        try:
            values[flag] = duration(str(raw))
        except ValueError as exc:
            raise ValueError(f"--{flag.replace('_', '-')}: {exc}") from None
        if values[flag] <= 0 and flag != "stabilization":
            raise ValueError(f"--{flag.replace('_', '-')}: must be > 0")
    names = {"fetch_interval": "fetch", "scrape_interval": "scrape", "reconcile_interval": "reconcile"}
    intervals = {
        names.get(flag, flag): value for flag, value in values.items() if flag not in ("duration", "request_timeout")
    }
    return session.Options(
        scenario=resolve_scenario(args.scenario),
        duration=values.get("duration"),
        intervals=intervals,
        report=None if args.no_report else args.report,
        record=args.record,
        run_dir=args.run_dir,
        load_scale=args.load_scale,
        wait_for_capacity=args.gateway == "flow-control",
        request_timeout=values.get("request_timeout", router.DEFAULT_REQUEST_TIMEOUT),
        live=False if args.headless else None,
        prometheus=servers.prometheus_binary(),
        replicas=args.replicas,
        nats_cluster=args.nats_cluster,
    )


async def serve(args: argparse.Namespace) -> int:
    """The command's whole life, on a running loop; SIGINT/SIGTERM end it cleanly."""
    if args.load_scale < 0:
        print("wva sandbox: --load-scale must be >= 0", file=sys.stderr)
        return 2
    if not 1 <= args.replicas <= 5:
        print("wva sandbox: --replicas must be between 1 and 5", file=sys.stderr)
        return 2
    try:
        opts = options(args)
    except ValueError as exc:
        print(f"wva sandbox: {exc}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if not args.no_services:
            return await session.run(opts, stop=stop)
        return await cluster.run_cluster(
            resolve_scenario(args.scenario),
            kubeconfig_out=args.kubeconfig_out,
            prometheus_sd_out=args.prometheus_sd_out,
            no_load=args.no_load,
            load_scale=args.load_scale,
            wait_for_capacity=opts.wait_for_capacity,
            request_timeout=opts.request_timeout,
            stop=stop,
            announce=lambda line: print(line, flush=True),
        )
    except scenario.ScenarioError as exc:
        print(f"wva sandbox: {exc}", file=sys.stderr)
        return 2
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run(args: argparse.Namespace) -> int:
    """Entry used by services/cli.py (which calls commands synchronously)."""
    return asyncio.run(serve(args))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wva sandbox", description=HELP)
    add_arguments(parser)
    return run(parser.parse_args(argv))
