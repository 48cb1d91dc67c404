"""Least privilege, checked against behaviour: run each service against the emulated API (and as its NATS
user on deploy/nats/nats.conf), record every API request it makes, and compare with the RBAC rules that
`kubectl kustomize` renders for its ServiceAccount. Every call must be allowed, and every granted
(group, resource, verb) must be used by some call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client
from nats.aio.msg import Msg

from services.sandbox.kubeapi import KubeApiEmulator
from services.scaler import service as scaler_service
from services.scaler.settings import ScalerSettings
from services.watcher import service as watcher_service
from services.watcher.settings import WatcherSettings
from shared import kube, lifecycle, messages, natsio
from shared.lifecycle import Runtime
from shared.settings import Settings
from shared.subjects import SubjectKind, Subjects
from tests.integration.deploy import manifests, natsconf
from tests.integration.deploy.manifests import DEPLOY

S = Subjects()
NS = "llm-inference"


@dataclass(frozen=True)
class Call:
    group: str
    resource: str  # with "/subresource"
    verb: str
    namespace: str | None
    name: str | None


def calls(kube_api: KubeApiEmulator, *, named_lists: dict[str, str] | None = None) -> set[Call]:
    """The recorded requests as RBAC sees them. A list/watch with fieldSelector metadata.name=<n> is
    authorized as a request for <n>: `named_lists` gives that name per resource (the request log keeps
    no query string)."""
    out = set()
    for r in kube_api.faults.requests:
        segs = r.path.strip("/").split("/")
        if segs[0] == "api":
            group, rest = "", segs[2:]
        else:
            assert segs[0] == "apis", r
            group, rest = segs[1], segs[3:]
        namespace = None
        if rest and rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        assert rest, f"a non-resource request needs nonResourceURLs rules: {r}"
        resource = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
        name = rest[1] if len(rest) > 1 else (named_lists or {}).get(resource)
        out.add(Call(group, resource, r.verb, namespace, name))
    return out


def rules_for(docs: list[dict[str, Any]], account: str) -> list[tuple[str | None, dict[str, Any]]]:
    """(namespace or None for cluster-wide, rule) for every rule bound to wva-system/<account>."""

    def binds(binding: dict[str, Any]) -> bool:
        return any(
            s["kind"] == "ServiceAccount"
            and s["name"] == account
            and s.get("namespace", binding["metadata"].get("namespace")) == "wva-system"
            for s in binding.get("subjects", [])
        )

    found: list[tuple[str | None, dict[str, Any]]] = []
    for b in manifests.find(docs, "ClusterRoleBinding"):
        if binds(b):
            found += [
                (None, rule) for rule in manifests.one(docs, "ClusterRole", b["roleRef"]["name"])["rules"]
            ]
    for b in manifests.find(docs, "RoleBinding"):
        if binds(b):
            ns = b["metadata"]["namespace"]
            kind = b["roleRef"]["kind"]
            role = manifests.one(docs, kind, b["roleRef"]["name"])
            found += [(ns, rule) for rule in role["rules"]]
    return found


def allows(scope: str | None, rule: dict[str, Any], call: Call) -> bool:
    return (
        (scope is None or scope == call.namespace)
        and call.group in rule.get("apiGroups", [])
        and call.resource in rule.get("resources", [])
        and call.verb in rule.get("verbs", [])
        and (not rule.get("resourceNames") or call.name in rule["resourceNames"])
    )


def assert_exactly_covered(build: str, account: str, made: set[Call]) -> None:
    rules = rules_for(manifests.build(DEPLOY / build), account)
    denied = [c for c in made if not any(allows(scope, rule, c) for scope, rule in rules)]
    assert not denied, f"{account} ({build}) would be refused: {denied}"
    unused = [
        (scope, group, resource, verb)
        for scope, rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
        if not any(c.group == group and c.resource == resource and c.verb == verb for c in made)
    ]
    assert not unused, f"{account} ({build}) is granted what it never uses: {unused}"


async def until(check: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def as_user(settings_cls: type[Settings], srv: Any, user: str, **values: Any) -> Any:
    return settings_cls(
        nats_url=srv.url,
        nats_user=f"wva-{user}",
        nats_password=natsconf.password(user),
        http_addr="127.0.0.1:0",
        nats_connect_timeout=5.0,
        **values,
    )


async def _add_variant(api: client.ApiClient) -> None:
    core, apps, custom = client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api)
    docs = manifests.build(DEPLOY / "samples")
    for ns in ("wva-system", NS):
        await core.create_namespace({"metadata": {"name": ns}})
    deployment = manifests.one(docs, "Deployment", "llama-8b-a100")
    await apps.create_namespaced_deployment(NS, deployment)
    va = manifests.one(docs, kube.KIND, "llama-8b-a100")
    await custom.create_namespaced_custom_object(kube.GROUP, kube.VERSION, NS, kube.PLURAL, va)
    cm = manifests.one(manifests.build(DEPLOY / "base"), "ConfigMap", "saturation-scaling-config")
    await core.create_namespaced_config_map("wva-system", cm)


async def _run_scaler(tmp_path: Path, kube_api: KubeApiEmulator, kubeconfig: Path, mode: str) -> set[Call]:
    """The scaler, as wva-scaler, through one saturated snapshot and one invalidation."""
    with natsconf.server(tmp_path / "nats") as srv:
        watcher = await natsio.connect(as_user(Settings, srv, "watcher"), name="wva-watcher")
        fetcher = await natsio.connect(as_user(Settings, srv, "fetcher"), name="wva-fetcher")
        tools = await natsio.connect(as_user(Settings, srv, "tools"), name="wva-record")
        decisions: list[messages.Decision] = []

        async def on_decision(msg: Msg) -> None:
            decisions.append(messages.events_decoder.decode(msg.data))  # type: ignore[arg-type]

        await tools.subscribe(S.wildcard(SubjectKind.DECISIONS), cb=on_decision)
        settings = as_user(
            ScalerSettings,
            srv,
            "scaler",
            kubeconfig=str(kubeconfig),
            scaler_mode=mode,
            reconcile_interval=0.5,
            fetch_request_timeout=0.2,
        )
        kube_api.faults.reset_counts()
        stop, ready = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(
            lifecycle.serve("scaler", settings, scaler_service.main, stop=stop, ready=ready)
        )
        try:
            await asyncio.wait_for(ready.wait(), 10)
            await until(lambda: kube_api.faults.count("watch", "configmaps") > 0, what="the ConfigMap watch")
            generation = 1
            target = messages.Target(
                namespace=NS,
                name="llama-8b-a100",
                at=messages.utcnow(),
                model_id="meta/llama-3.1-8b",
                variant_cost=40.0,
                accelerator="A100",
                min_replicas=1,
                max_replicas=8,
                scale_target=messages.ScaleTarget(name="llama-8b-a100"),
                resolved=True,
                deployment_generation=generation,
                spec_replicas=1,
                ready_replicas=1,
            )
            await natsio.publish(watcher.jetstream(), S.targets(NS, "llama-8b-a100"), target)
            now = messages.utcnow()
            snapshot = messages.MetricsSnapshot(
                namespace=NS,
                name="llama-8b-a100",
                at=now,
                model_id="meta/llama-3.1-8b",
                collected_at=now,
                deployment_generation=generation,
                allocation=messages.AllocationMetrics(arrival_rate=5.0),
                replicas=(
                    messages.ReplicaMetrics(pod="llama-8b-a100-0", kv_cache_usage=0.95, waiting=0, running=4),
                ),
            )
            await natsio.publish(fetcher.jetstream(), S.metrics(NS, "llama-8b-a100"), snapshot)
            await until(lambda: any(d.desired > d.current for d in decisions), what="a scale-up decision")
            await until(lambda: kube_api.faults.count("patch", "status") > 0, what="the VA status write")
            if mode == "scale":
                await until(lambda: kube_api.faults.count("create", "events") > 0, what="the ScaledUp event")
            invalidation = messages.Invalidation(
                namespace=NS, name="llama-8b-a100", at=messages.utcnow(), reason="template_changed"
            )
            await natsio.publish(watcher.jetstream(), S.invalidate(NS, "llama-8b-a100"), invalidation)
            await asyncio.sleep(0.5)  # the fetch request goes out (nobody answers here)
        finally:
            stop.set()
            assert await asyncio.wait_for(task, 15) == 0
            for nc in (watcher, fetcher, tools):
                await nc.close()
        assert natsconf.violations(srv) == [], "the scaler did something its NATS user may not"
    return calls(kube_api, named_lists={"configmaps": "saturation-scaling-config"})


async def test_scaler_in_scale_mode_uses_exactly_its_rbac(
    tmp_path: Path, kube_api: KubeApiEmulator, kubeconfig: Path, kube_client: client.ApiClient
) -> None:
    await _add_variant(kube_client)
    made = await _run_scaler(tmp_path, kube_api, kubeconfig, "scale")
    assert Call("apps", "deployments/scale", "patch", NS, "llama-8b-a100") in made
    assert_exactly_covered("overlays/default", "wva-scaler", made)
    deployment = await client.AppsV1Api(kube_client).read_namespaced_deployment("llama-8b-a100", NS)
    assert deployment.spec.replicas > 1


async def test_scaler_in_hpa_mode_uses_exactly_the_hpa_overlays_rbac(
    tmp_path: Path, kube_api: KubeApiEmulator, kubeconfig: Path, kube_client: client.ApiClient
) -> None:
    await _add_variant(kube_client)
    made = await _run_scaler(tmp_path, kube_api, kubeconfig, "hpa")
    assert not [c for c in made if c.group == "apps"]
    assert_exactly_covered("overlays/hpa", "wva-scaler", made)


async def test_watcher_uses_exactly_its_rbac(
    tmp_path: Path, kube_api: KubeApiEmulator, kubeconfig: Path, kube_client: client.ApiClient
) -> None:
    await _add_variant(kube_client)
    with natsconf.server(tmp_path / "nats") as srv:
        tools = await natsio.connect(as_user(Settings, srv, "tools"), name="wva-record")
        targets: list[Any] = []

        async def on_target(msg: Msg) -> None:
            targets.append(messages.targets_decoder.decode(msg.data))

        await tools.subscribe(S.wildcard(SubjectKind.TARGETS), cb=on_target)
        settings = as_user(WatcherSettings, srv, "watcher", kubeconfig=str(kubeconfig))
        runtimes: list[Runtime] = []

        async def main(runtime: Runtime) -> None:
            runtimes.append(runtime)
            await watcher_service.main(runtime)

        kube_api.faults.reset_counts()
        stop, ready = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(lifecycle.serve("watcher", settings, main, stop=stop, ready=ready))
        try:
            await asyncio.wait_for(ready.wait(), 10)
            await until(
                lambda: bool(runtimes) and runtimes[0].health.report().get("synced", False), what="sync"
            )
            await until(lambda: any(t.name == "llama-8b-a100" for t in targets), what="the VA's target")
            await until(lambda: kube_api.faults.count("watch") >= 4, what="four watches")
        finally:
            stop.set()
            assert await asyncio.wait_for(task, 15) == 0
            await tools.close()
        assert natsconf.violations(srv) == [], "the watcher did something its NATS user may not"
    assert_exactly_covered("overlays/default", "wva-watcher", calls(kube_api))


def test_fetcher_has_no_kubernetes_access_at_all() -> None:
    docs = manifests.build(DEPLOY / "overlays/default")
    assert rules_for(docs, "wva-fetcher") == []
    assert manifests.one(docs, "ServiceAccount", "wva-fetcher")["automountServiceAccountToken"] is False
    pod = manifests.one(docs, "Deployment", "wva-fetcher")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
