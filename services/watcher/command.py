"""``wva watcher``: watch the cluster, publish targets and invalidations on NATS."""

from __future__ import annotations

import argparse
import sys

from services.watcher import service
from services.watcher.settings import WatcherSettings
from shared import config, lifecycle

HELP = """Watch VariantAutoscalings and their Deployments, ReplicaSets and Pods; publish a Target per VA
on <prefix>.targets.<ns>.<va> and Invalidation events on <prefix>.invalidate.<ns>.<va>."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config.add_arguments(parser, WatcherSettings)


def run(args: argparse.Namespace) -> int:
    try:
        settings = config.load(WatcherSettings, args)
    except config.ConfigError as exc:
        print(f"wva watcher: {exc}", file=sys.stderr)
        return 2
    return lifecycle.run("watcher", settings, service.main)
