"""The emulated cluster of a scenario: Kubernetes API, vLLM pods, router, load, Prometheus file_sd.

    async with Cluster(scenario, prometheus_sd_out=path) as cluster:
        await cluster.wait_ready()
        await cluster.run_load()

`Cluster` assembles the parts: the API emulator (kubeapi, with our `VllmRuntime` as its pod runtime),
one Deployment and one VariantAutoscaling per variant, the router (the inference gateway, with its
queue per model and its `/metrics` at `gateway_address`) fed by the load generators, and the file_sd
writer fed by pod readiness. `run_cluster` is the CLI's whole life cycle around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from services.sandbox import exposition, filesd, load, router, runtime, scenario
from services.sandbox.kubeapi import KubeApiEmulator, Store
from services.sandbox.kubeapi import resources as kube_resources

log = logging.getLogger(__name__)

ACCELERATOR_LABEL: Final = "inference.optimization/acceleratorName"
VARIANT_LABEL: Final = "sandbox.wva.llmd.ai/variant"
VA_API_VERSION: Final = "llmd.ai/v1alpha1"
SERVING_PORT: Final = 8000
# The controller's own Ready delay comes on top of each variant's startup_seconds (the runtime's boot).
CONTROLLER_READY_DELAY: Final = 0.1


def deployment_manifest(model: scenario.Model, variant: scenario.Variant) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": variant.name, VARIANT_LABEL: variant.name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": variant.name, "namespace": model.namespace, "labels": dict(labels)},
        "spec": {
            "replicas": variant.replicas,
            "selector": {"matchLabels": dict(labels)},
            "template": {
                "metadata": {
                    "labels": dict(labels),
                    "annotations": runtime.pod_annotations(
                        model_id=model.id, params=variant.server, startup_seconds=variant.startup_seconds
                    ),
                },
                "spec": {
                    "containers": [
                        {
                            "name": "vllm",
                            "image": "vllm/vllm-openai:emulated",
                            "args": ["--model", model.id, "--max-num-seqs", str(variant.server.max_num_seqs)],
                            "ports": [{"name": "http", "containerPort": SERVING_PORT, "protocol": "TCP"}],
                        }
                    ]
                },
            },
        },
    }


def variant_autoscaling_manifest(model: scenario.Model, variant: scenario.Variant) -> dict[str, Any]:
    return {
        "apiVersion": VA_API_VERSION,
        "kind": "VariantAutoscaling",
        "metadata": {
            "name": variant.va_name,
            "namespace": model.namespace,
            "labels": {ACCELERATOR_LABEL: variant.accelerator},
        },
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": variant.name},
            "modelID": model.id,
            "variantCost": variant.cost,
            "minReplicas": variant.min_replicas,
            "maxReplicas": variant.max_replicas,
        },
    }


class Cluster:
    """One scenario's emulated cluster; an async context manager that stops everything it started."""

    def __init__(
        self,
        spec: scenario.Scenario,
        *,
        prometheus_sd_out: str | Path | None = None,
        kubeconfig_out: str | Path | None = None,
        no_load: bool = False,
        load_scale: float = 1.0,
        api_port: int = 0,
        request_timeout: float = router.DEFAULT_REQUEST_TIMEOUT,
        wait_for_capacity: bool = True,
    ) -> None:
        self.scenario = spec
        self.no_load = no_load
        self.load_scale = load_scale
        self.kubeconfig_out = Path(kubeconfig_out) if kubeconfig_out is not None else None
        self.router = router.Router(request_timeout=request_timeout, wait_for_capacity=wait_for_capacity)
        for model in spec.models:
            self.router.add_model(model.id)
        self.gateway = exposition.serving(router.QueueSizeCollector(self.router))
        self.sd = filesd.FileSDWriter(prometheus_sd_out) if prometheus_sd_out is not None else None
        self.runtime = runtime.VllmRuntime(router=self.router, sd=self.sd)
        # The replicas a scenario begins with were running before it: ready at once (wait_ready ends it).
        self.runtime.pre_existing = True
        self._api_port = api_port
        self.api: KubeApiEmulator | None = None
        self.generators: list[load.LoadGenerator] = []
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Cluster:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        try:
            if self.sd is not None:
                self.sd.flush()  # an empty target list at once, so Prometheus starts clean
            await self.gateway.start()
            self._stack.push_async_callback(self.gateway.stop)
            dispatcher = asyncio.create_task(self.router.run(), name="sandbox-router")
            self._stack.push_async_callback(_cancel, dispatcher)
            api = KubeApiEmulator(
                runtime=self.runtime, startup_delay=CONTROLLER_READY_DELAY, port=self._api_port
            )
            remove_listener = api.store.add_listener(self.runtime.observe)
            self._stack.callback(remove_listener)
            # Stop order (reverse): the emulator stops its controller, which stops the pods it started;
            # then the runtime stops whatever is left.
            self._stack.push_async_callback(self.runtime.close)
            await api.start()
            self._stack.push_async_callback(api.stop)
            self.api = api
            if self.kubeconfig_out is not None:
                namespace = self.scenario.namespaces[0] if self.scenario.namespaces else "default"
                api.write_kubeconfig(self.kubeconfig_out, namespace=namespace)
            self._create_objects(api)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        await self._stack.aclose()

    def _create_objects(self, api: KubeApiEmulator) -> None:
        store = api.store
        for namespace in self.scenario.namespaces:
            if store.find(kube_resources.NAMESPACES, None, namespace) is None:
                store.create(kube_resources.NAMESPACES, {"metadata": {"name": namespace}})
        for model, variant in self.scenario.variants():
            store.create(kube_resources.DEPLOYMENTS, deployment_manifest(model, variant))
            store.create(kube_resources.VARIANT_AUTOSCALINGS, variant_autoscaling_manifest(model, variant))

    # -- state

    @property
    def gateway_address(self) -> str:
        """host:port of the router's `/metrics` (the gateway's queue per model)."""
        if self.gateway.port is None:
            raise RuntimeError("the cluster is not started")
        return f"127.0.0.1:{self.gateway.port}"

    @property
    def store_api(self) -> KubeApiEmulator:
        if self.api is None:
            raise RuntimeError("the cluster is not started")
        return self.api

    def spec_replicas(self, variant_name: str) -> int:
        model, variant = self.scenario.variant(variant_name)
        deploy = self.store_api.store.find(kube_resources.DEPLOYMENTS, model.namespace, variant.name)
        return 0 if deploy is None else int(deploy["spec"].get("replicas", 1))

    def ready_pods(self, variant_name: str | None = None) -> list[router.PodKey]:
        """Ready pods with a running server (of one variant, or all)."""
        pods = self.runtime.ready_pods()
        if variant_name is None:
            return pods
        _, variant = self.scenario.variant(variant_name)
        store = self.store_api.store
        out = []
        for key in pods:
            namespace, name = key.split("/", 1)
            pod = store.find(kube_resources.PODS, namespace, name)
            if pod is not None and (pod["metadata"].get("labels") or {}).get(VARIANT_LABEL) == variant.name:
                out.append(key)
        return out

    async def wait_ready(self) -> None:
        """Until every variant has as many ready, serving pods as its Deployment asks for (bound it
        with `asyncio.timeout`). From then on new pods boot for their variant's startup_seconds."""

        def settled() -> bool:
            return all(
                len(self.ready_pods(v.name)) == self.spec_replicas(v.name)
                for _, v in self.scenario.variants()
            )

        try:
            await wait_until(self.store_api.store, settled)
        finally:
            self.runtime.pre_existing = False

    # -- load

    def make_generators(self) -> list[load.LoadGenerator]:
        generators = []
        for i, model in enumerate(self.scenario.models):
            if model.load is None:
                continue
            profile = _scaled(model.load, self.load_scale)
            generators.append(
                load.LoadGenerator(
                    model_id=model.id,
                    profile=profile,
                    input_tokens=model.requests.input_tokens,
                    output_tokens=model.requests.output_tokens,
                    dispatch=self.router.route,
                    seed=load.model_seed(self.scenario.seed, i),
                    duration=self.scenario.duration,
                )
            )
        return generators

    async def run_load(self) -> None:
        """Play the scenario's load for its duration (returns at once with no_load)."""
        if self.no_load:
            return
        self.generators = self.make_generators()
        async with asyncio.TaskGroup() as tasks:
            for generator in self.generators:
                tasks.create_task(generator.run(), name=f"sandbox-load-{generator.model_id}")

    def describe(self) -> list[str]:
        """Human-readable lines: where everything listens."""
        api = self.store_api
        lines = [f"kube API:     {api.url}", f"gateway:      http://{self.gateway_address}/metrics"]
        if self.kubeconfig_out is not None:
            lines.append(f"kubeconfig:   {self.kubeconfig_out}")
        if self.sd is not None:
            lines.append(f"file_sd:      {self.sd.path}")
        for key, server in sorted(self.runtime.servers().items()):
            state = "ready" if key in self.runtime.ready_pods() else "starting"
            lines.append(f"pod {key}: http://127.0.0.1:{server.port}/metrics ({server.model_id}, {state})")
        return lines


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _scaled(profile: load.Profile, factor: float) -> load.RateProfile:
    if factor == 1.0:
        return profile
    if isinstance(profile, load.Requests):  # recorded requests: the same ones, closer together
        return profile.scaled(factor)
    return _ScaledProfile(profile, factor)


class _ScaledProfile:
    """A profile times a constant (`--load-scale`), without a variant of every profile type."""

    def __init__(self, inner: load.Profile, factor: float) -> None:
        self._inner = inner
        self._factor = factor

    def rate(self, t: float) -> float:
        return self._inner.rate(t) * self._factor

    def peak(self) -> float:
        return self._inner.peak() * self._factor


async def wait_until(store: Store, predicate: Callable[[], bool]) -> None:
    """Re-check `predicate` after every change in the store until it holds.

    Store listeners (the runtime's readiness view among them) run before a subscriber wakes, so the
    predicate sees their effect.
    """
    subscription = store.subscribe(tag="sandbox-wait")
    try:
        while not predicate():
            if await subscription.get() is None:
                raise RuntimeError("the API emulator stopped")
    finally:
        subscription.close()


async def run_cluster(
    scenario_path: str | Path,
    *,
    kubeconfig_out: str | Path,
    prometheus_sd_out: str | Path,
    no_load: bool = False,
    load_scale: float = 1.0,
    wait_for_capacity: bool = True,
    request_timeout: float = router.DEFAULT_REQUEST_TIMEOUT,
    stop: asyncio.Event | None = None,
    announce: Callable[[str], None] = print,
    on_started: Callable[[Cluster], Awaitable[None]] | None = None,
) -> int:
    """Run a scenario's emulated cluster until `stop` is set (or the load ends and stop is set).

    The load plays once for the scenario's duration; the cluster keeps running afterwards until `stop`,
    so an autoscaler can be watched scaling back down. Returns the process exit code.
    """
    spec = scenario.load_scenario(scenario_path)
    stop = stop or asyncio.Event()
    async with Cluster(
        spec,
        kubeconfig_out=kubeconfig_out,
        prometheus_sd_out=prometheus_sd_out,
        no_load=no_load,
        load_scale=load_scale,
        wait_for_capacity=wait_for_capacity,
        request_timeout=request_timeout,
    ) as cluster:
        boot = max((v.startup_seconds for _, v in spec.variants()), default=0.0)
        try:
            async with asyncio.timeout(30.0 + boot):
                await cluster.wait_ready()
        except TimeoutError:
            announce("warning: not every pod became ready in time; running anyway")
        announce(f"scenario {spec.name!r}: {spec.description or ''}".rstrip(": "))
        for line in cluster.describe():
            announce(line)
        announce(
            "load: none (--no-load)" if no_load else f"load: {spec.duration:g}s, then idle until stopped"
        )
        if on_started is not None:
            await on_started(cluster)
        load_task = asyncio.create_task(cluster.run_load(), name="sandbox-load")
        stop_task = asyncio.create_task(stop.wait(), name="sandbox-stop")
        try:
            done, _ = await asyncio.wait({load_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            if load_task in done:
                load_task.result()  # a crashed generator fails loudly
                for generator in cluster.generators:
                    c = cluster.router.counters[generator.model_id]
                    announce(
                        f"load done: {generator.model_id}: sent {generator.sent + generator.refused}, waited at "
                        f"the gateway {c.queued}, not served {c.timed_out + c.rejected}"
                    )
                await stop_task
        finally:
            for task in (load_task, stop_task):
                task.cancel()
            for task in (load_task, stop_task):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    announce("stopped")
    return 0
