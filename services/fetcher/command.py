"""``wva fetcher``: reads saturation metrics for every VA and publishes them on NATS."""

from __future__ import annotations

import argparse
import sys

from services.fetcher.settings import FetcherSettings
from shared import config, lifecycle

HELP = """Read saturation metrics (Prometheus or the pods' /metrics) for every tracked VA and publish
snapshots on wva.metrics; answer on-demand requests on wva.fetch."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config.add_arguments(parser, FetcherSettings)


def run(args: argparse.Namespace) -> int:
    try:
        settings = config.load(FetcherSettings, args)
    except config.ConfigError as exc:
        print(f"wva fetcher: {exc}", file=sys.stderr)
        return 2
    from services.fetcher import service

    return lifecycle.run("fetcher", settings, service.main)
