"""``wva scaler``: decide and apply replica counts from targets, snapshots and invalidations."""

from __future__ import annotations

import argparse
import sys

from services.scaler import service
from services.scaler.settings import ScalerSettings
from shared import config, lifecycle

HELP = "decide replica counts (saturation analysis, cost-aware) and apply them"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config.add_arguments(parser, ScalerSettings)


def run(args: argparse.Namespace) -> int:
    try:
        settings = config.load(ScalerSettings, args)
        settings.saturation_base()
    except config.ConfigError as exc:
        print(f"wva scaler: {exc}", file=sys.stderr)
        return 2
    return lifecycle.run("scaler", settings, service.main)
