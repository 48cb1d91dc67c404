"""``wva fetcher``: reads saturation metrics for every VA and publishes them on NATS."""

from __future__ import annotations

import argparse

import shared.settings
from services.fetcher.settings import FetcherSettings
from shared import lifecycle

HELP = """Read saturation metrics (Prometheus or the pods' /metrics) for every tracked VA and publish
snapshots on wva.metrics; answer on-demand requests on wva.fetch."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    shared.settings.add_arguments(parser, FetcherSettings)


def run(args: argparse.Namespace) -> int:
    from services.fetcher import service  # imported when run, so `--help` stays light

    return lifecycle.run_command("fetcher", FetcherSettings, args, service.main)
