"""The processes of a sandbox run: nats-server, Prometheus (when installed), watcher, fetcher, scaler.

    async with Pipeline(run_dir=..., kubeconfig=..., sd_file=..., intervals=Intervals()) as pipeline:
        await pipeline.start()
        ...
        pipeline.crashed()          # services that exited on their own

With ``replicas=N`` every service runs N times (``watcher``, ``watcher-2`` …, each its own
``HOSTNAME``) sharing the work through leases (``WVA_LEASE_BACKEND=nats``, docs/design.md §11); with
``nats_cluster=3`` nats-server is three nodes routed into one JetStream cluster and the streams have
three replicas.

Every child runs in its own process group (so a terminal's Ctrl-C reaches the sandbox only, which
then stops the children in order) with its output in `<run_dir>/<name>.log`. Stopping is SIGTERM to
the group, then SIGKILL after a grace period; `stop()` runs from `__aexit__`, so nothing stays
running when the sandbox ends normally, fails, or is interrupted. The pids go to `<run_dir>/pids`
as they start, for whoever wants to check that. nats-server and Prometheus are started by
`servers`, the one launcher the tests and benchmarks use too.

Exceptions::

    RuntimeError
    └── PipelineError     a binary is missing, or a process did not start or become ready in time
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final

import aiohttp

from services.sandbox import servers
from services.sandbox.servers import Child
from shared import natsio, streams
from shared.settings import Settings
from shared.subjects import Subjects

log = logging.getLogger(__name__)

SERVICES: Final = ("watcher", "fetcher", "scaler")


class PipelineError(RuntimeError):
    """The pipeline could not be started; the message says which part and why."""


@dataclass(frozen=True, kw_only=True)
class Intervals:
    """The services' timing, short enough to watch (the production defaults are 15-120 s)."""

    fetch: float = 2.0
    scrape: float = 1.0
    reconcile: float = 2.0
    stabilization: float = 20.0
    rate_window: float = 15.0
    lease_ttl: float = 6.0  # with several replicas: a failover within seconds, to watch

    @property
    def cache_ttl(self) -> float:
        return max(2 * self.fetch, 1.0)


class Pipeline:
    """Starts nats-server, Prometheus (when `prometheus` is set) and the three services."""

    def __init__(
        self,
        *,
        run_dir: Path,
        kubeconfig: Path,
        sd_file: Path,
        intervals: Intervals,
        prometheus: str | None,
        extra_env: dict[str, str] | None = None,
        replicas: int = 1,
        nats_cluster: int = 1,
    ) -> None:
        self.run_dir = run_dir
        self.kubeconfig = kubeconfig
        self.sd_file = sd_file
        self.intervals = intervals
        self.prometheus = prometheus
        self.extra_env = dict(extra_env or {})
        self.pids_file = run_dir / "pids"
        self.replicas = replicas
        self.nats_cluster = nats_cluster
        self.nats_urls: list[str] = []
        self.nats_port = 0  # known once started (the launcher picks the port, another if it was taken)
        self.prometheus_port = 0
        self.prometheus_ready_at: float | None = None  # time.monotonic(); places its discovery ticks
        self.children: list[Child] = []
        self.service_ports: dict[str, int] = {}
        self.gateway: str | None = None  # host:port of the router's /metrics, given to `start`

    @property
    def collector(self) -> str:
        return "prometheus" if self.prometheus else "scrape"

    @property
    def nats_url(self) -> str:
        """Every node's URL, comma-separated (``WVA_NATS_URL`` takes that for a cluster)."""
        return ",".join(self.nats_urls) if self.nats_urls else f"nats://127.0.0.1:{self.nats_port}"

    def instances(self, service: str) -> list[str]:
        """The child names of ``service``'s replicas: ``scaler``, ``scaler-2`` …"""
        return [service if i == 1 else f"{service}-{i}" for i in range(1, self.replicas + 1)]

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    async def __aenter__(self) -> Pipeline:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- start

    async def start(
        self, *, timeout: float = 30.0, record: Path | None = None, gateway: str | None = None
    ) -> None:
        """nats-server, then `wva record` when asked, then Prometheus, then the services, each ready
        before the next. The recorder starts before the services so that the recording holds every
        message the scaler reads: `wva replay --check` then reproduces every decision.

        `gateway` (host:port of the router's `/metrics`, `Cluster.gateway_address`): Prometheus scrapes
        it, or, without Prometheus, the fetcher reads it itself (`WVA_GATEWAY_METRICS_URL`)."""
        self.gateway = gateway
        self.run_dir.mkdir(parents=True, exist_ok=True)
        await self._start_nats(timeout)
        if record is not None:
            await self._start_recorder(record, timeout)
        if self.prometheus is not None:
            await self._start_prometheus(self.prometheus, timeout)
        names = [name for service in SERVICES for name in self.instances(service)]
        for service in SERVICES:
            for name in self.instances(service):
                self._start_service(service, name)
        await asyncio.gather(*(self._wait_service_ready(name, timeout) for name in names))

    async def _start_nats(self, timeout: float) -> None:
        binary = servers.nats_server_binary()
        if binary is None:
            raise PipelineError(f"nats-server not found: {servers.NATS_INSTALL_HINT}")
        if self.nats_cluster > 1:
            cluster = servers.NatsCluster(binary, self.run_dir / "nats", size=self.nats_cluster)
            self.children.extend(node.process for node in cluster.nodes)
            self.nats_urls = [node.url for node in cluster.nodes]
            await self._start_server(cluster.nodes[0].process, lambda: cluster.start(timeout, pids_file=self.pids_file))
            return
        server = servers.NatsServer(binary, self.run_dir)
        self.children.append(server.process)
        await self._start_server(server.process, lambda: server.start(timeout, pids_file=self.pids_file))
        self.nats_port = server.port

    async def _start_prometheus(self, binary: str, timeout: float) -> None:
        server = servers.PrometheusServer(
            binary,
            self.run_dir / "prometheus",
            sd_path=self.sd_file,
            scrape_interval=self.intervals.scrape,
            gateway=self.gateway,
        )
        self.children.append(server.process)
        await self._start_server(server.process, lambda: server.start(timeout, pids_file=self.pids_file))
        self.prometheus_port = server.port
        self.prometheus_ready_at = server.ready_at

    @staticmethod
    async def _start_server(child: Child, start: Callable[[], None]) -> None:
        # The launcher waits for readiness by polling; a thread keeps the emulated cluster serving.
        try:
            await asyncio.to_thread(start)
        except servers.ServerError as exc:
            raise PipelineError(str(exc)) from None
        log.info("started %s (pid %s), log %s", child.name, child.pid, child.log_path)

    def _service_env(self, name: str, instance: str) -> dict[str, str]:
        i = self.intervals
        env = {
            "WVA_NATS_URL": self.nats_url,
            # Port 0: the service binds a free port itself and logs it, so no other process on a
            # shared machine can take it between a pick here and the service's bind.
            "WVA_HTTP_ADDR": "127.0.0.1:0",
            "WVA_LOG_FORMAT": "json",
        }
        if self.replicas > 1:
            env |= {"WVA_LEASE_BACKEND": "nats", "WVA_LEASE_TTL": f"{i.lease_ttl:g}s", "HOSTNAME": instance}
        if self.nats_cluster > 1:
            env["WVA_STREAM_REPLICAS"] = str(min(3, self.nats_cluster))
        if name in ("watcher", "scaler"):
            env["KUBECONFIG"] = str(self.kubeconfig.resolve())
        if name == "fetcher":
            if self.prometheus is not None:
                env["WVA_PROMETHEUS_URL"] = self.prometheus_url
            env |= {
                "WVA_COLLECTOR": self.collector,
                "WVA_FETCH_INTERVAL": f"{i.fetch:g}s",
                "WVA_CACHE_TTL": f"{i.cache_ttl:g}s",
                "WVA_RATE_WINDOW": f"{i.rate_window:g}s",
            }
            if self.gateway is not None and self.prometheus is None:
                env["WVA_GATEWAY_METRICS_URL"] = f"http://{self.gateway}/metrics"
        if name == "scaler":
            env |= {
                "WVA_FETCH_INTERVAL": f"{i.fetch:g}s",
                "WVA_RECONCILE_INTERVAL": f"{i.reconcile:g}s",
                "WVA_SCALE_DOWN_STABILIZATION": f"{i.stabilization:g}s",
            }
        return env | self.extra_env

    def _start_service(self, name: str, instance: str) -> None:
        child = Child(
            name=instance,
            args=[sys.executable, "-m", f"services.{name}"],
            log_path=self.run_dir / f"{instance}.log",
            env=self._service_env(name, instance),
        )
        self._launch(child)

    async def _wait_service_ready(self, name: str, timeout: float) -> None:
        child = self.child(name)
        started = time.monotonic()
        port = await self._bound_port(child, SERVICES[self._stop_rank(name)[0]], timeout)
        self.service_ports[name] = port
        await self._wait_http(child, f"http://127.0.0.1:{port}/readyz", timeout - (time.monotonic() - started))

    @staticmethod
    async def _bound_port(child: Child, service: str, timeout: float) -> int:
        """The HTTP port a service bound, from its log line "<service> started" (it logs JSON lines)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = child.exit_code()
            if code is not None:
                raise PipelineError(f"{child.name} exited with {code} at start:\n{child.log_tail()}")
            try:
                lines = child.log_path.read_text(errors="replace").splitlines()
            except OSError:
                lines = []
            for line in lines:
                with contextlib.suppress(ValueError):  # a line that is not JSON (a traceback) says nothing
                    record = json.loads(line)
                    if isinstance(record, dict) and record.get("msg") == f"{service} started":
                        port = record.get("http_port")
                        if isinstance(port, int):
                            return port
            await asyncio.sleep(0.05)
        raise PipelineError(f"{child.name} did not start in {timeout:g}s:\n{child.log_tail()}")

    async def _wait_http(self, child: Child, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as session:
            while time.monotonic() < deadline:
                code = child.exit_code()
                if code is not None:
                    raise PipelineError(f"{child.name} exited with {code} at start:\n{child.log_tail()}")
                try:
                    async with session.get(url) as resp:
                        if resp.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.1)
        raise PipelineError(f"{child.name} not ready in {timeout:g}s ({url}):\n{child.log_tail()}")

    def _launch(self, child: Child) -> None:
        self.children.append(child)
        child.start(self.pids_file)
        log.info("started %s (pid %s), log %s", child.name, child.pid, child.log_path)

    # -- extra tools (wva record)

    async def _start_recorder(self, out: Path, timeout: float) -> None:
        nc = await natsio.connect(Settings(nats_url=self.nats_url), name="wva-sandbox-setup")
        try:
            js = nc.jetstream()
            subjects = Subjects()
            await streams.ensure(js, subjects, streams.StreamSpec(replicas=min(3, self.nats_cluster)))
            # The tool runs in this process's working directory, so a relative path means the same there.
            self.start_tool("record", ["record", "--out", str(out), "--follow", "--since", "1h"])
            names = [subjects.stream_name(s) for s in (streams.TARGETS, streams.METRICS, streams.EVENTS)]
            deadline = time.monotonic() + timeout
            # Following means one consumer on each stream (three on the events: invalidations,
            # decisions, owners).
            while [(await js.stream_info(n)).state.consumer_count for n in names] < [1, 1, 3]:
                if time.monotonic() > deadline:
                    raise PipelineError(f"wva record did not start following in {timeout:g}s")
                await asyncio.sleep(0.05)
        finally:
            await nc.close()

    def start_tool(self, name: str, args: list[str]) -> Child:
        """Run `wva <args>` against this pipeline's NATS, stopped with the rest."""
        child = Child(
            name=name,
            args=[sys.executable, "-m", "services.cli", *args],
            log_path=self.run_dir / f"{name}.log",
            env={"WVA_NATS_URL": self.nats_url, "WVA_LOG_FORMAT": "json"},
            stop_signal=signal.SIGINT,
        )
        self._launch(child)
        return child

    # -- state

    def child(self, name: str) -> Child:
        for child in self.children:
            if child.name == name:
                return child
        raise KeyError(name)

    def crashed(self) -> list[Child]:
        """Children that exited without being asked to."""
        return [c for c in self.children if not c.expected_exit and c.exit_code() is not None]

    def describe(self) -> list[str]:
        lines = [f"nats:         {self.nats_url}" + (f" ({self.nats_cluster}-node cluster)" if self.nats_cluster > 1 else "")]
        if self.prometheus is not None:
            lines.append(f"prometheus:   {self.prometheus_url}")
        if self.gateway is not None:
            lines.append(f"gateway:      http://{self.gateway}/metrics  (the router's queue per model)")
        for name, port in sorted(self.service_ports.items(), key=lambda item: self._stop_rank(item[0])):
            lines.append(
                f"{name + ':':<13} http://127.0.0.1:{port}/metrics  (log {self.run_dir / (name + '.log')})"
            )
        return lines

    # -- stop

    def _stop_rank(self, name: str) -> tuple[int, str]:
        """A service's place in the stopping order (the watcher's replicas first), or -1."""
        for rank, service in enumerate(SERVICES):
            if name in self.instances(service):
                return rank, name
        return -1, name

    async def stop(self) -> None:
        """Stop the services, watchers then fetchers then scalers, then the rest in reverse start order
        (tools, Prometheus, nats-server last). The scaler stops after what feeds it, so little is
        published that it never reads; the recorder stops after it, so its last decisions are kept."""
        services = sorted((c for c in self.children if self._stop_rank(c.name)[0] >= 0), key=lambda c: self._stop_rank(c.name))
        for child in services + [c for c in reversed(self.children) if c not in services]:
            await child.stop()
