"""``wva scaler``: decide and apply replica counts from targets, snapshots and invalidations."""

from __future__ import annotations

import argparse

import shared.settings
from services.scaler.settings import ScalerSettings
from shared import lifecycle

HELP = "decide replica counts (saturation analysis, cost-aware) and apply them"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    shared.settings.add_arguments(parser, ScalerSettings)


def run(args: argparse.Namespace) -> int:
    from services.scaler import service  # imported when run, so `--help` stays light

    return lifecycle.run_command("scaler", ScalerSettings, args, service.main)
