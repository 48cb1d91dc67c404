"""``wva watcher``: watch the cluster, publish targets and invalidations on NATS."""

from __future__ import annotations

import argparse

import shared.settings
from services.watcher.settings import WatcherSettings
from shared import lifecycle

HELP = """Watch VariantAutoscalings and their Deployments, ReplicaSets and Pods; publish a Target per VA
on <prefix>.targets.<ns>.<va> and Invalidation events on <prefix>.invalidate.<ns>.<va>."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    shared.settings.add_arguments(parser, WatcherSettings)


def run(args: argparse.Namespace) -> int:
    from services.watcher import service  # imported when run, so `--help` stays light

    return lifecycle.run_command("watcher", WatcherSettings, args, service.main)
