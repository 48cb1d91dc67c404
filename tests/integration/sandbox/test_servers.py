"""The one launcher of nats-server and Prometheus (services/sandbox/servers.py), as the sandbox, the
tests and the benchmarks use it: restarts on the same port, with the store kept or wiped; a port another
process took first is replaced; the services' own ports are theirs to pick."""

from __future__ import annotations

import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.js.errors import NotFoundError

from services.sandbox import servers
from services.sandbox.pipeline import Pipeline, PipelineError
from services.sandbox.servers import (
    NATS_INSTALL_HINT,
    PROMETHEUS_INSTALL_HINT,
    Child,
    NatsServer,
    PortTaken,
    PrometheusServer,
)
from tests.fixtures.binaries import require_binary


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


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another process holds (listening), as on a machine shared with others."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def _first_pick(monkeypatch: pytest.MonkeyPatch, port: int) -> list[int]:
    """`free_port` answers `port` first (taken by the time the server binds it), then the kernel's picks."""
    picks: list[int] = []
    real = servers.free_port

    def pick() -> int:
        picks.append(port if not picks else real())
        return picks[-1]

    monkeypatch.setattr(servers, "free_port", pick)
    return picks


@pytest.mark.parametrize("kind", ["nats-server", "prometheus"])
def test_a_port_taken_before_the_server_binds_it_is_replaced(
    kind: str, taken_port: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    picks = _first_pick(monkeypatch, taken_port)
    server: NatsServer | PrometheusServer
    if kind == "nats-server":
        server = NatsServer(require_binary("nats-server", NATS_INSTALL_HINT), tmp_path)
    else:
        server = PrometheusServer(require_binary("prometheus", PROMETHEUS_INSTALL_HINT), tmp_path)
    try:
        server.start(pids_file=tmp_path / "pids")
        assert picks[0] == taken_port and server.port == picks[1] != taken_port
        with socket.create_connection(("127.0.0.1", server.port), timeout=2):
            pass
        # Both attempts are in the pids file: whoever cleans up after a SIGKILLed sandbox sees them.
        assert len((tmp_path / "pids").read_text().splitlines()) == 2
    finally:
        server.stop()


def test_a_port_the_caller_chose_is_kept_even_when_taken(taken_port: int, tmp_path: Path) -> None:
    server = NatsServer(require_binary("nats-server", NATS_INSTALL_HINT), tmp_path, port=taken_port)
    try:
        with pytest.raises(PortTaken, match="nats-server exited at start"):
            server.start()
    finally:
        server.stop()
    assert server.port == taken_port


async def test_a_service_binds_its_own_port_and_the_pipeline_reads_it_from_its_log(tmp_path: Path) -> None:
    # The sandbox gives each service WVA_HTTP_ADDR=127.0.0.1:0 (nothing can take a port between a
    # pick and the bind) and learns the port from the service's "<name> started" line.
    line = '{"level": "info", "msg": "scaler started", "http_port": 43210, "prefix": "wva"}'
    script = f"import time; print('not json'); print({line!r}, flush=True); time.sleep(30)"
    child = Child(name="scaler", args=[sys.executable, "-c", script], log_path=tmp_path / "scaler.log")
    child.start()
    try:
        assert await Pipeline._bound_port(child, "scaler", 10.0) == 43210
    finally:
        await child.stop(grace=0.5)
    gone = Child(name="fetcher", args=[sys.executable, "-c", "raise SystemExit(3)"], log_path=tmp_path / "f.log")
    gone.start()
    with pytest.raises(PipelineError, match="fetcher exited with 3 at start"):
        await Pipeline._bound_port(gone, "scaler", 10.0)
