"""``wva``: one command, one subcommand per service or tool.

Each subcommand lives in a module with ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``;
it is imported only when chosen, so ``wva --help`` imports no subcommand at all and a service pulls
in only its own dependencies (tests/integration/test_cli_processes.py holds that).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol, cast

from shared import __version__


@dataclass(frozen=True)
class Subcommand:
    module: str
    summary: str  # the first line of the module's HELP (a unit test keeps them equal)


# The order is the order of `wva --help`. The summaries live here, not only in the modules, so that
# listing the commands imports none of them (the sandbox alone pulls in 30 modules, rich and jsonschema).
COMMANDS: Final = {
    "watcher": Subcommand(
        "services.watcher.command",
        "Watch VariantAutoscalings and their Deployments, ReplicaSets and Pods; publish a Target per VA",
    ),
    "fetcher": Subcommand(
        "services.fetcher.command",
        "Read saturation metrics (Prometheus or the pods' /metrics) for every tracked VA and publish",
    ),
    "scaler": Subcommand(
        "services.scaler.command", "decide replica counts (saturation analysis, cost-aware) and apply them"
    ),
    "sandbox": Subcommand(
        "services.sandbox.command",
        "run wva end to end on an emulated cluster under a load scenario, live, with a report",
    ),
    "lab": Subcommand(
        "services.lab.command",
        "compare wva with HPA, KEDA and an oracle on a trace or scenario, in simulated time",
    ),
    "tail": Subcommand("services.tools.tail", "print wva's NATS messages as they arrive, one readable line each"),
    "top": Subcommand(
        "services.tools.top", "live table of every VA: replicas, KV usage, queue, snapshot age, last decision"
    ),
    "record": Subcommand(
        "services.tools.record",
        "record targets, snapshots, invalidations and decisions to a JSONL file for `wva replay`",
    ),
    "replay": Subcommand(
        "services.scaler.replay_command",
        "replay recorded events through the scaler core; --check compares with recorded decisions",
    ),
}


class Command(Protocol):
    HELP: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def _available() -> dict[str, Subcommand]:
    """The commands whose module is installed (an image may leave the sandbox out); finding a module
    imports only its package's ``__init__``."""
    found = {}
    for name, command in COMMANDS.items():
        try:
            if importlib.util.find_spec(command.module) is not None:
                found[name] = command
        except ModuleNotFoundError:
            continue
    return found


def build_parser(available: dict[str, Subcommand]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wva", description="Autoscaler for LLM inference variants on Kubernetes, over NATS."
    )
    parser.add_argument("--version", action="version", version=f"wva {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in available.items():
        sub.add_parser(name, help=command.summary, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    available = _available()
    if args_list and args_list[0] in available:
        name = args_list[0]
        command = cast(Command, importlib.import_module(available[name].module))
        parser = argparse.ArgumentParser(prog=f"wva {name}", description=command.HELP)
        command.add_arguments(parser)
        return command.run(parser.parse_args(args_list[1:]))
    parser = build_parser(available)
    parsed = parser.parse_args(args_list)
    if parsed.command is None:
        parser.print_help()
        return 2
    return 2  # pragma: no cover - argparse already rejected unknown commands


if __name__ == "__main__":
    sys.exit(main())
