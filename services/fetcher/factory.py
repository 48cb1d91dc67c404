"""Backends by ``CollectorType``: new backends register here without touching the service."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Final

from services.fetcher.collector import MetricsCollector
from services.fetcher.settings import FetcherSettings


class CollectorType(StrEnum):
    PROMETHEUS = "prometheus"
    SCRAPE = "scrape"


Constructor = Callable[[FetcherSettings], MetricsCollector]


def _prometheus(settings: FetcherSettings) -> MetricsCollector:
    from services.fetcher.prometheus import PrometheusCollector

    return PrometheusCollector(settings)


def _scrape(settings: FetcherSettings) -> MetricsCollector:
    from services.fetcher.scrape import ScrapeCollector

    return ScrapeCollector(settings)


REGISTRY: Final[dict[CollectorType, Constructor]] = {
    CollectorType.PROMETHEUS: _prometheus,
    CollectorType.SCRAPE: _scrape,
}


def register(kind: CollectorType, constructor: Constructor) -> None:
    REGISTRY[kind] = constructor


def create(settings: FetcherSettings) -> MetricsCollector:
    """The collector ``WVA_COLLECTOR`` names."""
    try:
        constructor = REGISTRY[CollectorType(settings.collector)]
    except (KeyError, ValueError):
        raise ValueError(
            f"WVA_COLLECTOR={settings.collector!r}: no such backend (known: {', '.join(sorted(REGISTRY))})"
        ) from None
    return constructor(settings)
