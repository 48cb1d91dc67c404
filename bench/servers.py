"""Start and stop the real servers the benchmarks need: nats-server and Prometheus on 127.0.0.1.

The launcher is the sandbox's (``services/sandbox/servers.py``), the same one the tests use; this module
only gives each server a temporary directory for the length of a benchmark.
"""

from __future__ import annotations

import contextlib
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from services.sandbox.servers import (
    NATS_INSTALL_HINT,
    PROMETHEUS_INSTALL_HINT,
    NatsServer,
    PrometheusServer,
    nats_server_binary,
    prometheus_binary,
)

__all__ = [
    "NatsServer",
    "PrometheusServer",
    "nats",
    "nats_server_binary",
    "prometheus",
    "prometheus_binary",
    "prometheus_cpu_seconds",
]


@contextlib.contextmanager
def nats() -> Iterator[NatsServer]:
    binary = nats_server_binary()
    if binary is None:
        raise RuntimeError(f"nats-server not found: {NATS_INSTALL_HINT}")
    with tempfile.TemporaryDirectory(prefix="wva-bench-nats-") as tmp:
        server = NatsServer(binary, Path(tmp))
        server.start()
        try:
            yield server
        finally:
            server.stop()


@contextlib.contextmanager
def prometheus(scrape_interval: str = "1s") -> Iterator[PrometheusServer]:
    binary = prometheus_binary()
    if binary is None:
        raise RuntimeError(f"prometheus not found: {PROMETHEUS_INSTALL_HINT}")
    with tempfile.TemporaryDirectory(prefix="wva-bench-prom-") as tmp:
        server = PrometheusServer(binary, Path(tmp), scrape_interval=scrape_interval)
        server.start()
        try:
            yield server
        finally:
            server.stop()


def prometheus_cpu_seconds(server: PrometheusServer) -> float:
    """Prometheus's own ``process_cpu_seconds_total``, read from its /metrics now (not via a scrape)."""
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=5) as resp:
        for raw in resp:
            line = raw.decode()
            if line.startswith("process_cpu_seconds_total"):
                return float(line.split()[1])
    raise RuntimeError("process_cpu_seconds_total not in Prometheus's /metrics")
