"""NATS access for the command-line tools: the common settings, no health server, no streams setup."""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from nats.aio.client import Client

import shared.settings
from shared import natsio
from shared.settings import Settings, SettingsError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    shared.settings.add_arguments(parser, Settings)


def load_settings(args: argparse.Namespace) -> Settings | None:
    try:
        return shared.settings.load(Settings, args)
    except SettingsError as exc:
        print(f"wva: {exc}", file=sys.stderr)
        return None


@asynccontextmanager
async def connected(settings: Settings, name: str) -> AsyncIterator[Client]:
    nc = await natsio.connect(settings, name=f"wva-{name}")
    try:
        yield nc
    finally:
        await nc.close()
