"""`wva sandbox`: an emulated cluster under a load scenario (and, later, the wva services against it).

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

from services.sandbox import cluster, scenario

HELP: Final = "run an emulated cluster (Kubernetes API, vLLM replicas, load) under a scenario"
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


def resolve_scenario(value: Path) -> Path:
    """A path, or the bare name of a shipped scenario (`spike` -> scenarios/spike.yaml)."""
    if value.exists() or value.suffix:
        return value
    return SCENARIOS / f"{value}.yaml"


async def serve(args: argparse.Namespace) -> int:
    """The command's whole life, on a running loop; SIGINT/SIGTERM end it cleanly."""
    if not args.no_services:
        print(
            "wva sandbox: running the wva services is not implemented yet; use --no-services", file=sys.stderr
        )
        return 2
    if args.load_scale < 0:
        print("wva sandbox: --load-scale must be >= 0", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        return await cluster.run_cluster(
            resolve_scenario(args.scenario),
            kubeconfig_out=args.kubeconfig_out,
            prometheus_sd_out=args.prometheus_sd_out,
            no_load=args.no_load,
            load_scale=args.load_scale,
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
