"""Benchmark 7: failover time of the scaler and of the fetcher (docs/deployment.md "Several replicas").

Two replicas of a service run as real `wva` processes (`python -m services.<name>`, one partition so one
replica owns the work), with their leases on either backend (``WVA_LEASE_BACKEND``): ``nats``, a real
nats-server's KV bucket, or ``kubernetes``, Lease objects in the emulated Kubernetes API (both replicas
get a kubeconfig for it, the fetcher too). Again and again: the owner is killed with SIGKILL, and the
clock runs until the survivor does the owner's work —

- scaler: a VA whose every replica is saturated, its Target following the emulated Kubernetes API's
  Deployment, so the owner scales it up one replica at a time; *failover* = kill → the survivor's first
  scale PATCH in the API (its User-Agent names it);
- fetcher: four VAs scraped from emulated pods every second; *failover* = kill → the first snapshot
  published after the kill (only the survivor can publish one).

*Lease taken* is kill → the moment the lease names the survivor: its key in the bucket, or the
``spec.holderIdentity`` of its Lease (``wva-<service>-0``) in the emulator's store. The killed replica
is started again (a new identity) and becomes the standby of the next round. The expected failover is
the lease TTL (the dead owner's key expiring, counted from its last renewal, up to a renewal period
before the kill) plus up to one renewal period (the survivor's next round), plus the time to act; with
Lease objects up to one renewal period more, since the survivor's TTL starts when it first reads the
last renewal (shared/kubeleases.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import nats
from aiohttp import web
from nats.aio.client import Client

from bench import servers, workload
from bench.report import Table, percentile, stat
from services.sandbox import exposition, queueing, vllm
from services.sandbox.kubeapi import KubeApiEmulator
from services.sandbox.kubeapi import resources as kres
from services.sandbox.servers import Child, free_port
from shared import natsio, streams
from shared.kubeleases import object_name
from shared.natsleases import read_bucket
from shared.subjects import SubjectKind, Subjects

S = Subjects()
BUCKET = "WVA_LEASES"
NAMESPACE = "wva-system"  # of the Lease objects (WVA_LEASE_NAMESPACE)
BACKENDS = ("nats", "kubernetes")


@dataclass
class Replica:
    name: str
    child: Child

    def start(self) -> None:
        self.child.start()

    def kill(self) -> None:
        proc = self.child.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)
        self.child.proc = None


class LeaseView(Protocol):
    """Who holds a lease key, and how many replicas of a service are members, as the backend stores it."""

    async def holder(self, key: str) -> str | None: ...

    async def members(self, service: str) -> int: ...


@dataclass
class BucketView:
    nc: Client

    async def holder(self, key: str) -> str | None:
        js = self.nc.jetstream()
        try:
            entries = await read_bucket(js, await js.key_value(BUCKET), BUCKET, keys=key)
        except nats.errors.Error:
            return None
        entry = entries.get(key)
        return None if entry is None else entry.holder

    async def members(self, service: str) -> int:
        js = self.nc.jetstream()
        try:
            return len(await read_bucket(js, await js.key_value(BUCKET), BUCKET, keys=f"members.{service}.*"))
        except nats.errors.Error:
            return 0


@dataclass
class LeaseObjectView:
    """The Lease objects in the emulator's store (read in this process, no request of its own)."""

    api: KubeApiEmulator

    async def holder(self, key: str) -> str | None:
        obj = self.api.store.find(kres.LEASES, NAMESPACE, object_name(key))
        return None if obj is None else obj.get("spec", {}).get("holderIdentity")

    async def members(self, service: str) -> int:
        prefix = object_name(f"members.{service}.")
        return sum(o["metadata"]["name"].startswith(prefix) for o in self.api.store.iter_objects(kres.LEASES, NAMESPACE))


async def _emulated_api(stack: contextlib.AsyncExitStack, tmp: Path) -> tuple[KubeApiEmulator, Path]:
    """The emulated Kubernetes API for this run, and a kubeconfig for it."""
    api = await stack.enter_async_context(KubeApiEmulator(startup_delay=0.05))
    return api, api.write_kubeconfig(tmp / "kubeconfig")


async def _lease_backend(
    stack: contextlib.AsyncExitStack, backend: str, *, nc: Client, ttl: float, tmp: Path,
    kube: tuple[KubeApiEmulator, Path] | None = None,
) -> tuple[LeaseView, dict[str, str]]:
    """How to read the leases, and the replicas' lease settings; ``kubernetes`` uses ``kube`` (the run's
    emulated API and its kubeconfig) or starts one."""
    env = {"WVA_LEASE_BACKEND": backend, "WVA_LEASE_TTL": f"{ttl:g}s", "WVA_PARTITIONS": "1"}
    if backend == "nats":
        return BucketView(nc), env
    if backend != "kubernetes":
        raise ValueError(f"lease backend {backend!r}: one of {', '.join(BACKENDS)}")
    api, kubeconfig = kube or await _emulated_api(stack, tmp)
    return LeaseObjectView(api), {**env, "KUBECONFIG": str(kubeconfig), "WVA_LEASE_NAMESPACE": NAMESPACE}


def _owner(holder: str | None, replicas: list[Replica]) -> Replica | None:
    return next((r for r in replicas if holder and holder.startswith(f"{r.name}-")), None)


async def _settled(view: LeaseView, service: str, replicas: list[Replica], *, timeout: float = 60.0) -> Replica:
    """The owner, once both replicas are members and it holds the lease."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        owner = _owner(await view.holder(f"{service}.0"), replicas)
        if owner is not None and await view.members(service) == len(replicas):
            return owner
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the {service} replicas did not settle in {timeout:g}s")


async def _taken(view: LeaseView, key: str, survivor: Replica, since: float, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _owner(await view.holder(key), [survivor]) is survivor:
            return time.monotonic() - since
        await asyncio.sleep(0.05)
    return float("nan")


def _child(service: str, name: str, workdir: Path, env: dict[str, str]) -> Replica:
    env = {**env, "HOSTNAME": name, "WVA_HTTP_ADDR": f"127.0.0.1:{free_port()}", "WVA_LOG_FORMAT": "json"}
    return Replica(
        name, Child(name=name, args=[sys.executable, "-m", f"services.{service}"], log_path=workdir / f"{name}.log", env=env)
    )


@contextlib.asynccontextmanager
async def _replicas(service: str, workdir: Path, env: dict[str, str]) -> AsyncIterator[list[Replica]]:
    replicas = [_child(service, f"{service}-{n}", workdir, env) for n in "ab"]
    for r in replicas:
        r.start()
    try:
        yield replicas
    finally:
        for r in replicas:
            await r.child.stop(grace=5.0)


async def _kills(
    view: LeaseView, service: str, replicas: list[Replica], kills: int, ttl: float, acted: Any
) -> list[tuple[float, float]]:
    """(lease taken, failover) seconds for each kill; ``acted(survivor, since)`` waits for the work."""
    found = []
    for _ in range(kills):
        owner = await _settled(view, service, replicas)
        survivor = next(r for r in replicas if r is not owner)
        await asyncio.sleep(0.5)  # the owner at work
        killed = time.monotonic()
        owner.kill()
        taken_task = asyncio.create_task(_taken(view, f"{service}.0", survivor, killed, 3 * ttl + 10))
        failover = await acted(survivor, killed)
        found.append((await taken_task, failover))
        owner.start()  # the standby of the next round (a new identity)
    return found


# ------------------------------------------------------------------------------------- scaler


async def scaler(kills: int, *, ttl: float, backend: str = "nats") -> list[tuple[float, float]]:
    va = workload.VA("failover", "va-failover", "org/failover-model", 10.0, 1)
    async with contextlib.AsyncExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wva-bench-failover-")))
        nats_server = stack.enter_context(servers.nats())
        api, kubeconfig = await _emulated_api(stack, tmp)
        api.store.create(kres.NAMESPACES, {"metadata": {"name": va.namespace}})
        deployment = {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": va.name, "namespace": va.namespace},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": va.name}},
                     "template": {"metadata": {"labels": {"app": va.name}}, "spec": {"containers": [{"name": "x", "image": "x"}]}}},
        }  # fmt: skip
        api.store.create(kres.DEPLOYMENTS, deployment)
        api.store.create(kres.VARIANT_AUTOSCALINGS, {
            "apiVersion": "llmd.ai/v1alpha1", "kind": "VariantAutoscaling",
            "metadata": {"name": va.name, "namespace": va.namespace, "labels": {"inference.optimization/acceleratorName": "A100"}},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": va.name},
                     "modelID": va.model_id, "variantCost": "10", "minReplicas": 1, "maxReplicas": 100000},
        })  # fmt: skip
        nc = await nats.connect(nats_server.url)
        stack.push_async_callback(nc.close)
        js = nc.jetstream()
        await streams.ensure(js, S, streams.StreamSpec())
        view, lease_env = await _lease_backend(stack, backend, nc=nc, ttl=ttl, tmp=tmp, kube=(api, kubeconfig))
        env = {
            "WVA_NATS_URL": nats_server.url, "KUBECONFIG": str(kubeconfig), "WVA_CONFIG_NAMESPACE": "wva-system",
            "WVA_RECONCILE_INTERVAL": "1s", "WVA_FETCH_INTERVAL": "1s", "WVA_SCALE_UP_STEP": "one",
            "PATH": os.environ.get("PATH", ""), **lease_env,
        }  # fmt: skip

        async def feed() -> None:  # the watcher and the fetcher: the Deployment as it is, saturated
            while True:
                obj = api.store.find(kres.DEPLOYMENTS, va.namespace, va.name)
                assert obj is not None
                n, generation = int(obj["spec"]["replicas"]), int(obj["metadata"]["generation"])
                target = workload.target(va, replicas=n, generation=generation, max_replicas=100000)
                snap = workload.snapshot(va, collected_at=time.time(), kv=[0.95] * min(n, 64), waiting=8.0, generation=generation)
                await natsio.publish(js, S.targets(va.namespace, va.name), target)
                await natsio.publish(js, S.metrics(va.namespace, va.name), snap)
                await asyncio.sleep(0.3)

        def patched_by(who: Replica, since: float) -> bool:
            return any(
                r.at > since and r.verb == "patch" and r.user_agent.partition("/")[2].startswith(f"{who.name}-")
                for r in api.faults.requests
            )

        async def acted(survivor: Replica, since: float) -> float:
            deadline = time.monotonic() + 3 * ttl + 20
            while time.monotonic() < deadline:
                if patched_by(survivor, since):
                    first = min(r.at for r in api.faults.requests if r.at > since and r.verb == "patch")
                    return first - since
                await asyncio.sleep(0.02)
            return float("nan")

        feeder = asyncio.create_task(feed())
        try:
            async with _replicas("scaler", tmp, env) as replicas:
                return await _kills(view, "scaler", replicas, kills, ttl, acted)
        finally:
            feeder.cancel()
            await asyncio.gather(feeder, return_exceptions=True)
    raise AssertionError("unreachable")  # pragma: no cover


# ------------------------------------------------------------------------------------- fetcher


async def _metrics_server(stack: contextlib.AsyncExitStack) -> int:
    """One emulated vLLM pod's ``/metrics`` (every VA's pods point at it), in this process."""
    server = vllm.EmulatedServer(model_id="org/failover", params=queueing.ServerParams(), clock=lambda: 1.0)
    body = server.metrics_text()

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=body, headers={"Content-Type": exposition.CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return port


async def fetcher(kills: int, *, ttl: float, backend: str = "nats") -> list[tuple[float, float]]:
    vas = workload.vas(4, prefix="failover")
    async with contextlib.AsyncExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wva-bench-failover-")))
        port = await _metrics_server(stack)
        nats_server = stack.enter_context(servers.nats())
        nc = await nats.connect(nats_server.url)
        stack.push_async_callback(nc.close)
        js = nc.jetstream()
        await streams.ensure(js, S, streams.StreamSpec())
        for va in vas:
            addresses = {p: f"127.0.0.1:{port}" for p in workload.pod_names(va)}
            await natsio.publish(js, S.targets(va.namespace, va.name), workload.target(va, addresses=addresses))
        arrivals: list[float] = []

        async def on(_: Any) -> None:
            arrivals.append(time.monotonic())

        await nc.subscribe(S.wildcard(SubjectKind.METRICS), cb=on)
        view, lease_env = await _lease_backend(stack, backend, nc=nc, ttl=ttl, tmp=tmp)
        env = {"WVA_NATS_URL": nats_server.url, "WVA_COLLECTOR": "scrape", "WVA_FETCH_INTERVAL": "1s", "WVA_CACHE_TTL": "5s", **lease_env}

        async def acted(_: Replica, since: float) -> float:
            deadline = time.monotonic() + 3 * ttl + 20
            while time.monotonic() < deadline:
                after = [at for at in arrivals if at > since + 0.005]
                if after:
                    return after[0] - since
                await asyncio.sleep(0.02)
            return float("nan")

        async with _replicas("fetcher", tmp, env) as replicas:
            return await _kills(view, "fetcher", replicas, kills, ttl, acted)
    raise AssertionError("unreachable")  # pragma: no cover


# ------------------------------------------------------------------------------------- report


async def run(
    *, kills: int, rows: tuple[tuple[str, str, float], ...] = (("scaler", "nats", 3.0), ("fetcher", "nats", 3.0))
) -> list[Table]:
    """One table, a row per (service, lease backend, lease TTL s): every row in the JSON under one key."""
    table = Table(
        "failover",
        "7. Failover: the owning replica killed (SIGKILL) → the other does its work",
        ["service", "lease backend", "lease TTL s", "kills", "lease taken p50 / p99 s", "failover p50 / p99 / max s", "bound s"],
    )
    for service, backend, ttl in rows:
        measure = scaler if service == "scaler" else fetcher
        results = await measure(kills, ttl=ttl, backend=backend)
        taken = [t for t, _ in results]
        failover = [f for _, f in results]
        ok = [f for f in failover if f == f]
        periods = 2 if backend == "kubernetes" else 1  # the observer's TTL starts when it reads the last renewal
        table.add(
            [
                service, backend, f"{ttl:g}", len(results),
                f"{percentile(taken, 50):.2f} / {percentile(taken, 99):.2f}",
                f"{percentile(ok, 50):.2f} / {percentile(ok, 99):.2f} / {max(ok):.2f}" if ok else "none",
                f"{ttl + periods * ttl / 3:.1f}",
            ],
            service=service, backend=backend, ttl_s=ttl, kills=len(results), missed=len(failover) - len(ok),
            taken_p50_s=percentile(taken, 50), taken_p99_s=percentile(taken, 99),
            failover_p50_s=percentile(ok, 50) if ok else None, failover_p99_s=percentile(ok, 99) if ok else None,
            failover_max_s=max(ok) if ok else None, failover=stat(ok), samples=json.loads(json.dumps(failover)),
            taken_samples=json.loads(json.dumps(taken)), bound_s=ttl + periods * ttl / 3,
        )  # fmt: skip
    table.notes += [
        "Two replicas as processes, one partition; leases in a nats-server's KV bucket (nats) or in Lease objects "
        "of the emulated Kubernetes API, which both replicas reach with a kubeconfig (kubernetes). A kill when the "
        "owner is at work, then the killed replica restarts as the standby of the next kill. The scaler's reconcile "
        "interval and the fetcher's fetch interval are 1 s.",
        "Bound: TTL (the dead owner's key expiring, from its last renewal) + one renewal period (TTL/3, the "
        "survivor's next round), and with Lease objects one period more (the survivor's TTL starts when it first "
        "reads the last renewal), + the time to act. p99 is the nearest rank: with 20 kills, the largest. "
        "*Lease taken* (the bucket's key or the Lease's spec.holderIdentity names the survivor) is polled every "
        "50 ms, so it can read a little later than the work it enabled.",
    ]
    return [table]
