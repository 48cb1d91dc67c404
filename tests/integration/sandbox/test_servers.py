"""The one launcher of nats-server and Prometheus (services/sandbox/servers.py), as the sandbox, the
tests and the benchmarks use it: restarts on the same port, with the store kept or wiped."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import nats
import pytest
from nats.js.errors import NotFoundError

from services.sandbox.servers import Child, NatsServer, PrometheusServer


async def _stream_names(url: str) -> list[str]:
    nc = await nats.connect(url)
    try:
        return [s.config.name for s in await nc.jetstream().streams_info() if s.config.name]
    finally:
        await nc.close()


async def _add_stream(url: str) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="KEPT", subjects=["kept.>"])
        await js.publish("kept.a", b"1")
    finally:
        await nc.close()


async def test_restart_keeps_the_port_and_the_store(nats_server: NatsServer) -> None:
    await _add_stream(nats_server.url)
    port = nats_server.port
    nats_server.restart()
    assert nats_server.port == port
    assert await _stream_names(nats_server.url) == ["KEPT"]


async def test_restart_with_an_empty_store_loses_every_stream(nats_server: NatsServer) -> None:
    await _add_stream(nats_server.url)
    nats_server.restart(empty_store=True)
    assert await _stream_names(nats_server.url) == []
    nc = await nats.connect(nats_server.url)
    try:
        with pytest.raises(NotFoundError):
            await nc.jetstream().stream_info("KEPT")
    finally:
        await nc.close()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_stop_ends_the_whole_process_group(tmp_path: Path) -> None:
    # A child that ignores SIGTERM and has a child of its own: both are gone after the grace period.
    script = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    child = Child(name="stubborn", args=[sys.executable, "-c", script], log_path=tmp_path / "out")
    child.start()
    deadline = time.monotonic() + 10
    while not child.log_path.read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.02)
    grandchild = int(child.log_path.read_text().split()[0])
    child.stop_now(grace=0.5)
    assert child.exit_code() == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(grandchild)


async def test_prometheus_serves_after_a_restart_on_the_same_port(
    prometheus_server: PrometheusServer,
) -> None:
    port = prometheus_server.port
    prometheus_server.stop()
    prometheus_server.start()
    assert prometheus_server.port == port
    assert await prometheus_server.wait_for('up{job="prometheus"}', timeout=15)
