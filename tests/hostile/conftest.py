"""Helpers for the hostile suite (issue #12): attackers and unlucky operators, against real parts.

Fixtures (on top of ``tests/fixtures``: ``nats_server``, ``prometheus_server``, ``kube_api``,
``wva_process`` …):

- ``big_nats``: a nats-server whose ``max_payload`` is 8 MiB, so payloads larger than the services'
  1 MiB limit reach them (a default server refuses them before any service sees them).
- ``hostile_http`` (``tests/fixtures/http.py``): ``await hostile_http(handler)`` -> ``"127.0.0.1:port"``,
  a pod or a Prometheus that answers as a test tells it; requests counted in ``.hits[address]``.
- ``cluster_objects``: ``await cluster_objects(name, replicas=…)`` creates a Deployment and its VA in
  the emulated API (``kube_api``), and returns the Target the watcher would publish for them.

Plain helpers: ``fetcher_env`` / ``scaler_env`` (the environment of a service process with short
intervals), ``publish_raw`` (bytes on any subject, JetStream-stored when a stream holds it),
``rejected(process)`` (its ``wva_messages_rejected_total``, by label), ``Feed`` (every message on a
subject filter, decoded, through a core subscription) and ``eventually``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from services.sandbox.kubeapi import KubeApiEmulator
from services.sandbox.kubeapi import resources as kube_resources
from shared import kube, messages
from tests.fixtures import scaler as scaler_fixtures
from tests.fixtures.servers import NatsServer, nats_server_binary
from tests.fixtures.services import ServiceProcess, metric_sum

NS = "llm"
MODEL = "meta/llama-3.1-8b"


# ----------------------------------------------------------------------------------- environments


def fetcher_env(nats_url: str, **overrides: object) -> dict[str, str]:
    env = {
        "WVA_NATS_URL": nats_url,
        "WVA_FETCH_INTERVAL": "1s",
        "WVA_CACHE_TTL": "5s",
        "WVA_STREAM_CHECK_INTERVAL": "1s",
        "WVA_PROMETHEUS_TIMEOUT": "1s",
        "WVA_FETCH_BUDGET": "2s",
    }
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def scaler_env(nats_url: str, kubeconfig: Path, **overrides: object) -> dict[str, str]:
    env = {
        "WVA_NATS_URL": nats_url,
        "KUBECONFIG": str(kubeconfig),
        "WVA_CONFIG_NAMESPACE": "wva-system",
        "WVA_FETCH_INTERVAL": "1s",
        "WVA_RECONCILE_INTERVAL": "1s",
        "WVA_STREAM_CHECK_INTERVAL": "1s",
    }
    env.update({k: str(v) for k, v in overrides.items()})
    return env


# ----------------------------------------------------------------------------------- NATS


@pytest.fixture
def big_nats(tmp_path: Path) -> Iterator[NatsServer]:
    binary = nats_server_binary()
    assert binary is not None, "nats-server missing: make setup"
    workdir = tmp_path / "big-nats"
    workdir.mkdir()
    server = NatsServer(binary, workdir, config="max_payload: 8MB\n")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def nats_client_big(big_nats: NatsServer) -> AsyncIterator[Client]:
    import nats

    nc = await nats.connect(big_nats.url, pending_size=256 * 1024 * 1024)
    try:
        yield nc
    finally:
        await nc.close()


async def last_message(js: Any, stream: str, subject: str) -> Any | None:
    """The stream's last message on ``subject``, None when it holds none (other errors raise)."""
    try:
        return await js.get_last_msg(stream, subject)
    except nats.js.errors.NotFoundError:
        return None


async def publish_raw(nc: Client, subject: str, data: bytes) -> None:
    """Core publish: a stream that holds ``subject`` stores it, without an ack round trip per message."""
    await nc.publish(subject, data)


class Feed:
    """Every message on ``subject`` (a core subscription), decoded with ``any_decoder`` when it decodes."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, messages.AnyMessage]] = []

    async def attach(self, nc: Client, subject: str) -> Feed:
        async def on(msg: Msg) -> None:
            with contextlib.suppress(messages.MessageError):
                self.messages.append((msg.subject, messages.any_decoder.decode(msg.data)))

        await nc.subscribe(subject, cb=on)
        return self

    def of(self, kind: type[Any], name: str | None = None) -> list[Any]:
        return [m for _, m in self.messages if isinstance(m, kind) and (name is None or m.name == name)]


async def eventually(check: Callable[[], Awaitable[bool] | bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g}s: {what}")
        await asyncio.sleep(0.1)


async def rejected(process: ServiceProcess, **labels: str) -> float:
    return metric_sum(await process.metrics(), "wva_messages_rejected_total", **labels)


# ----------------------------------------------------------------------------------- cluster


ClusterObjects = Callable[..., Awaitable[messages.Target]]


@pytest.fixture
def cluster_objects(kube_api: KubeApiEmulator) -> ClusterObjects:
    async def create(name: str, *, replicas: int = 1, max_replicas: int = 8, namespace: str = NS) -> messages.Target:
        store = kube_api.store
        if store.find(kube_resources.NAMESPACES, None, namespace) is None:
            store.create(kube_resources.NAMESPACES, {"metadata": {"name": namespace}})
        deployment = store.create(kube_resources.DEPLOYMENTS, scaler_fixtures.deployment(name, replicas, namespace))
        store.create(
            kube_resources.VARIANT_AUTOSCALINGS,
            {
                "apiVersion": kube.API_VERSION,
                "kind": kube.KIND,
                "metadata": {"name": name, "namespace": namespace, "labels": {kube.ACCELERATOR_LABEL: "A100"}},
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                    "modelID": MODEL,
                    "variantCost": "10",
                    "minReplicas": 1,
                    "maxReplicas": max_replicas,
                },
            },
        )
        return messages.Target(
            namespace=namespace, name=name, at=messages.utcnow(), model_id=MODEL, variant_cost=10.0,
            accelerator="A100", min_replicas=1, max_replicas=max_replicas,
            scale_target=messages.ScaleTarget(name=name), resolved=True,
            deployment_generation=int(deployment["metadata"].get("generation", 1)),
            spec_replicas=replicas, ready_replicas=replicas, updated_replicas=replicas, available_replicas=replicas,
        )

    return create


def saturated_snapshot(target: messages.Target) -> messages.MetricsSnapshot:
    """A snapshot a real collector produces for a VA whose every replica is saturated (KV 95 %)."""
    now = messages.utcnow()
    return messages.MetricsSnapshot(
        namespace=target.namespace, name=target.name, at=now, model_id=target.model_id, collected_at=now,
        deployment_generation=target.deployment_generation, template_hash=target.template_hash,
        allocation=messages.AllocationMetrics(
            arrival_rate=20.0, avg_input_tokens=500, avg_output_tokens=100, ttft_seconds=0.5, itl_seconds=0.05
        ),
        replicas=tuple(
            messages.ReplicaMetrics(pod=f"{target.name}-{i}", kv_cache_usage=0.95, waiting=8, running=30)
            for i in range(max(1, target.spec_replicas))
        ),
    )
