"""``wva``: one command, one subcommand per service or tool.

Each subcommand lives in a module with ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``;
it is imported only when chosen, so ``wva --help`` stays fast and a service pulls in only its own
dependencies.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from typing import Final, Protocol, cast

from shared import __version__

# name -> module; the order is the order of `wva --help`.
COMMANDS: Final = {
    "watcher": "services.watcher.command",
    "fetcher": "services.fetcher.command",
    "scaler": "services.scaler.command",
    "sandbox": "services.sandbox.command",
    "lab": "services.lab.command",
    "tail": "services.tools.tail",
    "top": "services.tools.top",
    "record": "services.tools.record",
    "replay": "services.scaler.replay_command",
}


class Command(Protocol):
    HELP: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def _available() -> dict[str, str]:
    found = {}
    for name, module in COMMANDS.items():
        try:
            if importlib.util.find_spec(module) is not None:
                found[name] = module
        except ModuleNotFoundError:
            continue
    return found


def _help_line(module: str) -> str:
    # Reading HELP means importing the module; keep it to the summary line.
    return str(getattr(importlib.import_module(module), "HELP", "")).splitlines()[0]


def build_parser(available: dict[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wva", description="Autoscaler for LLM inference variants on Kubernetes, over NATS."
    )
    parser.add_argument("--version", action="version", version=f"wva {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in available.items():
        sub.add_parser(name, help=_help_line(module), add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    available = _available()
    if args_list and args_list[0] in available:
        name = args_list[0]
        command = cast(Command, importlib.import_module(available[name]))
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
