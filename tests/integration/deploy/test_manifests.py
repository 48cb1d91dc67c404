"""deploy/: every manifest parses and validates, kustomize builds are whole, and what the pods are told
(environment, secrets, probes, security) fits what the services actually read."""

from __future__ import annotations

import base64
import dataclasses
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from services.fetcher.settings import FetcherSettings
from services.scaler.settings import ScalerSettings
from services.watcher.settings import WatcherSettings
from shared import natsio
from shared.settings import Settings, load
from tests.integration.deploy import manifests
from tests.integration.deploy.manifests import DEPLOY, SERVICES

SETTINGS: dict[str, type[Settings]] = {
    "watcher": WatcherSettings,
    "fetcher": FetcherSettings,
    "scaler": ScalerSettings,
}
BUILDS = [
    "base",
    "nats",
    "overlays/default",
    "overlays/existing-nats",
    "overlays/ha",
    "overlays/hpa",
    "overlays/kubernetes-leases",
    "overlays/scrape",
    "overlays/tls",
    "samples",
]
LEASE_RBAC_BUILD = "overlays/kubernetes-leases"  # the only build with WVA_LEASE_BACKEND=kubernetes
# Secrets the user brings (docs/deployment.md); everything else a build references must be in the build
# (as a Secret, or as the secretName of a cert-manager Certificate in it).
USER_SECRETS = {"wva-prometheus", "hf-token"}
EXTERNAL_NATS_SECRETS = {f"wva-nats-{s}" for s in SERVICES}


def _rel(path: Path) -> str:
    return str(path.relative_to(DEPLOY))


# ------------------------------------------------------------------------- files


@pytest.mark.parametrize("path", manifests.manifest_files(), ids=_rel)
def test_every_manifest_parses_into_named_objects(path: Path) -> None:
    docs = manifests.load(path)
    assert docs, f"{path} holds no object"
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= doc.keys(), doc
        assert doc["metadata"].get("name"), doc


@pytest.mark.parametrize("path", manifests.manifest_files(), ids=_rel)
def test_built_in_kinds_validate_strictly_against_kubernetes(path: Path) -> None:
    for doc in manifests.load(path):
        if doc["kind"] in manifests.CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(doc, manifests.KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("directory", manifests.kustomization_dirs(), ids=_rel)
def test_every_file_a_kustomization_names_exists(directory: Path) -> None:
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    named = list(k.get("resources", []))
    named += [p["path"] for p in k.get("patches", []) if "path" in p]
    for generator in k.get("configMapGenerator", []) + k.get("secretGenerator", []):
        named += [f.split("=", 1)[-1] for f in generator.get("files", []) + generator.get("envs", [])]
    # In a checkout whose credentials were generated (docs/deployment.md), as the builds below.
    rendered = manifests.rendered_deploy() / directory.relative_to(DEPLOY)
    for name in named:
        target = (rendered / name).resolve()
        assert target.exists(), f"{_rel(directory)}/kustomization.yaml names {name}, which does not exist"
        if target.is_dir():
            assert (target / "kustomization.yaml").exists(), f"{name} is a directory without a kustomization"


def test_every_kustomization_is_covered_here() -> None:
    assert {_rel(d) for d in manifests.kustomization_dirs()} == {*BUILDS, "crd"}


@pytest.mark.parametrize("build", BUILDS)
def test_kustomize_output_validates_and_has_no_duplicates(build: str) -> None:
    docs = manifests.build(DEPLOY / build)
    keys = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
    assert len(keys) == len(set(keys)), f"duplicates in {build}"
    for doc in docs:
        if doc["kind"] not in manifests.CUSTOM_KINDS:
            kubernetes_validate.validate(doc, manifests.KUBERNETES_VERSION, strict=True)
        if doc["kind"] not in {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}:
            assert doc["metadata"].get("namespace"), (
                f"{doc['kind']} {doc['metadata']['name']} has no namespace"
            )


def _volume_references(volume: dict[str, Any]) -> list[tuple[str, str]]:
    """(kind, name) of each ConfigMap and Secret a volume reads, projected sources included."""
    sources = [volume, *volume.get("projected", {}).get("sources", [])]
    found = [("ConfigMap", s["configMap"]["name"]) for s in sources if "configMap" in s]
    found += [("Secret", s["secret"]["secretName"]) for s in sources if "secretName" in s.get("secret", {})]
    found += [("Secret", s["secret"]["name"]) for s in sources if "name" in s.get("secret", {})]
    return found


@pytest.mark.parametrize("build", BUILDS)
def test_everything_a_pod_references_is_in_the_build(build: str) -> None:
    docs = manifests.build(DEPLOY / build)
    present = {(d["kind"], d["metadata"]["name"]) for d in docs}
    present |= {("Secret", c["spec"]["secretName"]) for c in manifests.find(docs, "Certificate")}
    external = USER_SECRETS | (
        EXTERNAL_NATS_SECRETS if build in ("base", "overlays/existing-nats") else set()
    )
    for workload in manifests.find(docs, "Deployment") + manifests.find(docs, "StatefulSet"):
        pod = workload["spec"]["template"]["spec"]
        if "serviceAccountName" in pod:
            assert ("ServiceAccount", pod["serviceAccountName"]) in present
        for volume in pod.get("volumes", []):
            for reference in _volume_references(volume):
                assert reference in present, f"{workload['metadata']['name']}: {volume}"
        for c in pod["containers"]:
            mounted = {m["name"] for m in c.get("volumeMounts", [])}
            claims = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
            assert mounted <= {v["name"] for v in pod.get("volumes", [])} | claims, c["name"]
            for source in c.get("envFrom", []):
                assert ("ConfigMap", source["configMapRef"]["name"]) in present, source
            for var in c.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["name"] not in external:
                    assert ("Secret", ref["name"]) in present, f"{workload['metadata']['name']}: {ref}"


# ------------------------------------------------------------------------- the wva Deployments


def _deployments(build: str = "overlays/default") -> dict[str, dict[str, Any]]:
    docs = manifests.build(DEPLOY / build)
    return {s: manifests.one(docs, "Deployment", f"wva-{s}") for s in SERVICES}


def environment(
    docs: list[dict[str, Any]],
    deployment: dict[str, Any],
    *,
    user_secrets: dict[str, dict[str, str]] | None = None,
) -> dict[str, str]:
    """What the container's environment would be, with Secrets read from the build (or given by the user)."""
    given = user_secrets or {}
    c = manifests.container(deployment)
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        env.update(manifests.one(docs, "ConfigMap", source["configMapRef"]["name"]).get("data", {}))
    for var in c.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        ref = var["valueFrom"]["secretKeyRef"]
        found = manifests.find(docs, "Secret", ref["name"])
        if found:
            env[var["name"]] = base64.b64decode(found[0]["data"][ref["key"]]).decode()
        elif ref["name"] in given:
            env[var["name"]] = given[ref["name"]][ref["key"]]
        else:
            assert ref.get("optional"), f"{var['name']}: Secret {ref['name']} missing and not optional"
    return env


@pytest.mark.parametrize(
    "build",
    [
        "overlays/default", "overlays/ha", "overlays/hpa", "overlays/scrape", "overlays/tls", "overlays/existing-nats",
        LEASE_RBAC_BUILD,
    ],
)
@pytest.mark.parametrize("service", SERVICES)
def test_each_service_environment_loads_with_its_own_settings(build: str, service: str) -> None:
    docs = manifests.build(DEPLOY / build)
    user_secrets = {f"wva-nats-{service}": {"user": f"wva-{service}", "password": "secret"}}
    env = environment(docs, manifests.one(docs, "Deployment", f"wva-{service}"), user_secrets=user_secrets)
    if build != "overlays/existing-nats":  # the generated credentials, read from the build's Secret
        assert env["WVA_NATS_PASSWORD"] == manifests.credentials()[service]["password"]
    cls = SETTINGS[service]
    known = {f.metadata["env"] for f in dataclasses.fields(cls)}
    unknown = sorted(k for k in env if k not in known)
    assert not unknown, f"wva {service} does not read {unknown}"
    settings = load(cls, environ=env)  # raises SettingsError naming a bad value
    assert settings.nats_user == f"wva-{service}"
    if build == "overlays/hpa" and service == "scaler":
        assert isinstance(settings, ScalerSettings) and settings.scaler_mode == "hpa"
    if build == "overlays/scrape" and service == "fetcher":
        assert isinstance(settings, FetcherSettings) and settings.collector == "scrape"
    if build == "overlays/tls":
        assert settings.nats_url.startswith("tls://") and settings.nats_tls_ca
    # several replicas share the work, through a KV bucket or, in one overlay, Lease objects
    assert settings.lease_backend == ("kubernetes" if build == LEASE_RBAC_BUILD else "nats")
    assert settings.stream_replicas == (3 if build in ("overlays/ha", "overlays/existing-nats") else 1)


@pytest.mark.parametrize("service", SERVICES)
def test_deployment_runs_the_service_as_a_restricted_non_root_pod(service: str) -> None:
    deployment = _deployments()[service]
    pod = deployment["spec"]["template"]["spec"]
    c = manifests.container(deployment)
    assert c["args"] == [service]
    assert c["image"] == "ghcr.io/wva-project/wva:0.1.0"
    assert pod["serviceAccountName"] == f"wva-{service}"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532  # the image's numeric USER
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert "add" not in sc["capabilities"]
    assert {"requests", "limits"} <= c["resources"].keys()
    assert "memory" in c["resources"]["limits"]
    assert pod["automountServiceAccountToken"] is (service != "fetcher")  # the fetcher needs no API


@pytest.mark.parametrize("service", SERVICES)
def test_probes_use_the_health_endpoints_on_the_http_port(service: str) -> None:
    c = manifests.container(_deployments()[service])
    port = Settings().http_addr.rsplit(":", 1)[1]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": int(port)}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    # The first NATS connection is retried for WVA_NATS_CONNECT_TIMEOUT before the service gives up;
    # the startup probe must not kill it sooner.
    startup = c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"]
    assert startup >= Settings().nats_connect_timeout


@pytest.mark.parametrize("service", SERVICES)
def test_termination_grace_outlasts_the_nats_drain(service: str) -> None:
    drain = natsio.connect_options(Settings(), name="x")["drain_timeout"]
    grace = _deployments()[service]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > drain + 5


@pytest.mark.parametrize("build", ["overlays/default", "overlays/ha"])
def test_every_service_runs_two_replicas_that_roll_spread_and_survive_a_drain(build: str) -> None:
    docs = manifests.build(DEPLOY / build)
    for service in SERVICES:
        deployment = manifests.one(docs, "Deployment", f"wva-{service}")
        spec = deployment["spec"]
        assert spec["replicas"] == 2
        # a rollout adds the new pod before the old one goes: one replica always holds the leases
        assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
        (term,) = spec["template"]["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
        assert term["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
        pdb = manifests.one(docs, "PodDisruptionBudget", f"wva-{service}")
        assert pdb["spec"]["minAvailable"] == 1
        assert pdb["spec"]["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()


def test_no_lease_rbac_without_the_kubernetes_lease_backend() -> None:
    # Leases live in NATS (WVA_LEASE_BACKEND=nats); Kubernetes Lease objects are not used, so no role
    # may grant coordination.k8s.io.
    for build in BUILDS:
        if build == LEASE_RBAC_BUILD:
            continue
        for doc in manifests.build(DEPLOY / build):
            if doc["kind"] in ("Role", "ClusterRole"):
                groups = {g for rule in doc.get("rules", []) for g in rule.get("apiGroups", [])}
                assert "coordination.k8s.io" not in groups, (build, doc["metadata"]["name"])


def test_the_kubernetes_leases_overlay_grants_leases_in_its_namespace_to_the_three_services_only() -> None:
    docs = manifests.build(DEPLOY / LEASE_RBAC_BUILD)
    common = manifests.one(docs, "ConfigMap", "wva-common")  # (kustomize adds a hash to the name)
    assert common["data"]["WVA_LEASE_BACKEND"] == "kubernetes"
    granted = []
    for doc in manifests.find(docs, "Role") + manifests.find(docs, "ClusterRole"):
        for rule in doc.get("rules", []):
            if "coordination.k8s.io" in rule.get("apiGroups", []):
                granted.append((doc["kind"], doc["metadata"].get("namespace"), doc["metadata"]["name"], rule))
    # one namespaced Role: the verbs shared/kubeleases.py uses (no watch, no patch), on leases only
    assert [(kind, ns) for kind, ns, _, _ in granted] == [("Role", "wva-system")], granted
    (_, _, role, rule) = granted[0]
    assert rule["resources"] == ["leases"] and "resourceNames" not in rule
    assert sorted(rule["verbs"]) == ["create", "delete", "get", "list", "update"]
    (binding,) = [b for b in manifests.find(docs, "RoleBinding") if b["roleRef"]["name"] == role]
    assert binding["roleRef"]["kind"] == "Role" and binding["metadata"]["namespace"] == "wva-system"
    assert sorted((s["kind"], s["name"], s["namespace"]) for s in binding["subjects"]) == [
        ("ServiceAccount", f"wva-{service}", "wva-system") for service in sorted(SERVICES)
    ]
    # the fetcher needs its token and a way to the API server for its leases, here only
    assert manifests.one(docs, "ServiceAccount", "wva-fetcher")["automountServiceAccountToken"] is True
    assert manifests.one(docs, "Deployment", "wva-fetcher")["spec"]["template"]["spec"]["automountServiceAccountToken"] is True
    egress = manifests.one(docs, "NetworkPolicy", "wva-fetcher")["spec"]["egress"]
    assert {"ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]} in egress


def test_ha_overlay_runs_a_three_node_nats_cluster() -> None:
    docs = manifests.build(DEPLOY / "overlays/ha")
    nats = manifests.one(docs, "StatefulSet", "wva-nats")
    assert nats["spec"]["replicas"] == 3 and nats["spec"]["podManagementPolicy"] == "Parallel"
    container = nats["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "cluster", "containerPort": 6222, "protocol": "TCP"} in container["ports"]
    assert container["env"] == [{"name": "SERVER_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    headless = manifests.one(docs, "Service", nats["spec"]["serviceName"])
    assert any(p["port"] == 6222 for p in headless["spec"]["ports"])
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("wva-nats-config"))
    routes = re.findall(r"nats-route://(wva-nats-\d)\.(\S+):6222", config["data"]["cluster.conf"])
    assert [r[0] for r in routes] == ["wva-nats-0", "wva-nats-1", "wva-nats-2"]
    assert {r[1] for r in routes} == {f"{headless['metadata']['name']}.wva-system.svc"}
    assert manifests.one(docs, "PodDisruptionBudget", "wva-nats")["spec"]["maxUnavailable"] == 1
    assert manifests.one(docs, "ConfigMap", "wva-common")["data"]["WVA_STREAM_REPLICAS"] == "3"


def test_services_and_service_monitor_select_the_pods_metrics_port() -> None:
    docs = manifests.build(DEPLOY / "base")
    monitor = manifests.one(docs, "ServiceMonitor", "wva")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True  # keeps the VA's `namespace` label
    for service in SERVICES:
        svc = manifests.one(docs, "Service", f"wva-{service}")
        pod_labels = manifests.one(docs, "Deployment", f"wva-{service}")["spec"]["template"]["metadata"][
            "labels"
        ]
        assert svc["spec"]["selector"].items() <= pod_labels.items()
        assert selector.items() <= svc["metadata"]["labels"].items()
        assert svc["spec"]["ports"][0]["name"] == "http"


def test_saturation_configmap_is_the_one_the_scaler_reads_and_is_valid() -> None:
    from services.scaler.scaling_config import ConfigSet, apply_configmap

    docs = manifests.build(DEPLOY / "base")
    user_secrets = {"wva-nats-scaler": {"user": "wva-scaler", "password": "p"}}
    env = environment(docs, manifests.one(docs, "Deployment", "wva-scaler"), user_secrets=user_secrets)
    scaler = load(ScalerSettings, environ=env)
    cm = manifests.one(docs, "ConfigMap", scaler.config_map_name)
    assert cm["metadata"]["namespace"] == scaler.config_namespace
    base = scaler.scaling_base()
    update = apply_configmap(ConfigSet(default=base), cm["data"], base=base)
    assert update.applied and not update.errors and not update.warnings
    loaded = yaml.safe_load(cm["data"]["default"])
    assert loaded == {
        "kvCacheThreshold": 0.80,
        "queueLengthThreshold": 5,
        "kvSpareTrigger": 0.10,
        "queueSpareTrigger": 3,
    }


def test_namespace_enforces_the_restricted_pod_security_standard() -> None:
    ns = manifests.one(manifests.build(DEPLOY / "base"), "Namespace", "wva-system")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_existing_nats_overlay_ships_no_nats() -> None:
    docs = manifests.build(DEPLOY / "overlays/existing-nats")
    assert not manifests.find(docs, "StatefulSet")
    # Only the services' NetworkPolicy towards your NATS: no NATS object, no Secret.
    assert [d["kind"] for d in docs if d["metadata"]["name"].startswith("wva-nats")] == ["NetworkPolicy"]
    assert not manifests.find(docs, "Secret")
    common = manifests.one(docs, "ConfigMap", "wva-common")["data"]
    assert (
        common["WVA_NATS_URL"]
        != manifests.one(manifests.build(DEPLOY / "base"), "ConfigMap", "wva-common")["data"]["WVA_NATS_URL"]
    )
