"""The NetworkPolicies of deploy/ allow exactly the connections docs/security.md lists: NATS' client
port from the three services (and a labelled tools pod), its routes port from NATS only, its monitoring
port from nowhere; the services' http port from Prometheus only; the watcher and the scaler out to the
API server, the fetcher out to Prometheus (or, in overlays/scrape, the pods' metrics port); DNS for all.
"""

from __future__ import annotations

import pytest

from tests.integration.deploy import manifests, netpol
from tests.integration.deploy.manifests import DEPLOY, SERVICES
from tests.integration.deploy.netpol import Endpoint, NetworkPolicies

NATS_BUILDS = ["overlays/default", "overlays/hpa", "overlays/scrape", "overlays/tls"]

PROMETHEUS = Endpoint("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"})
GRAFANA = Endpoint("grafana", "monitoring", {"app.kubernetes.io/name": "grafana"})
DNS = Endpoint("coredns", "kube-system", {"k8s-app": "kube-dns"})
TOOLS = Endpoint("tools", "wva-system", {"wva.llmd.ai/nats-tools": "true"})
STRANGER = Endpoint("stranger", "wva-system", {"app.kubernetes.io/part-of": "something-else"})
INFERENCE = Endpoint("vllm", "llm-inference", {"app": "llama-8b-a100"})
API_SERVER = Endpoint("kube-apiserver", None, ip="172.18.0.2")
INTERNET = Endpoint("example.com", None, ip="93.184.216.34")


def _setup(build: str) -> tuple[NetworkPolicies, dict[str, Endpoint]]:
    docs = manifests.build(DEPLOY / build)
    return NetworkPolicies(docs), netpol.pods_of(docs)


@pytest.mark.parametrize("build", [*NATS_BUILDS, "overlays/existing-nats"])
def test_every_wva_pod_is_isolated_both_ways(build: str) -> None:
    policies, pods = _setup(build)
    assert pods
    for pod in pods.values():
        assert policies.isolates(pod, "Ingress"), f"{pod.name} accepts anything"
        assert policies.isolates(pod, "Egress"), f"{pod.name} may connect anywhere"
    assert not policies.isolates(STRANGER, "Ingress")  # others' pods in wva-system are left alone


@pytest.mark.parametrize("build", NATS_BUILDS)
def test_nats_client_port_only_from_the_services_and_a_labelled_tools_pod(build: str) -> None:
    policies, pods = _setup(build)
    nats = pods["wva-nats"]
    for service in SERVICES:
        assert policies.allow(pods[f"wva-{service}"], nats, port=4222), service
    assert policies.allow(TOOLS, nats, port=4222)
    for other in (STRANGER, PROMETHEUS, INFERENCE):
        assert not policies.allow(other, nats, port=4222), other.name


@pytest.mark.parametrize("build", NATS_BUILDS)
def test_nats_routes_only_between_nats_pods_and_monitoring_from_nowhere(build: str) -> None:
    policies, pods = _setup(build)
    nats = pods["wva-nats"]
    assert policies.allow(nats, nats, port=6222)
    for other in (*[pods[f"wva-{s}"] for s in SERVICES], TOOLS, PROMETHEUS, STRANGER):
        assert not policies.allow(other, nats, port=6222), other.name
        assert not policies.allow(other, nats, port=8222), other.name


@pytest.mark.parametrize("build", [*NATS_BUILDS, "overlays/existing-nats"])
@pytest.mark.parametrize("service", SERVICES)
def test_service_http_port_only_from_prometheus(build: str, service: str) -> None:
    policies, pods = _setup(build)
    pod = pods[f"wva-{service}"]
    assert policies.allow(PROMETHEUS, pod, port=8080)
    assert not policies.allow(PROMETHEUS, pod, port=8081)
    for other in (GRAFANA, STRANGER, TOOLS, INFERENCE, *[pods[f"wva-{s}"] for s in SERVICES if s != service]):
        assert not policies.allow(other, pod, port=8080), other.name


@pytest.mark.parametrize("build", NATS_BUILDS)
def test_what_each_service_may_reach(build: str) -> None:
    policies, pods = _setup(build)
    watcher, fetcher, scaler = (pods[f"wva-{s}"] for s in SERVICES)
    for pod in (watcher, fetcher, scaler, pods["wva-nats"]):
        assert policies.allow(pod, DNS, port=53, protocol="UDP") and policies.allow(
            pod, DNS, port=53, protocol="TCP"
        )
        assert not policies.allow(pod, INTERNET, port=80), pod.name
        assert not policies.allow(pod, GRAFANA, port=3000), pod.name
    for pod in (watcher, scaler):  # the API server, through the kubernetes Service or after its DNAT
        assert policies.allow(pod, API_SERVER, port=443) and policies.allow(pod, API_SERVER, port=6443)
        assert not policies.allow(pod, PROMETHEUS, port=9090), pod.name
        assert not policies.allow(pod, INFERENCE, port=8000), pod.name
    assert not policies.allow(fetcher, API_SERVER, port=443)  # it has no Kubernetes access at all
    assert policies.allow(fetcher, PROMETHEUS, port=9090)
    assert policies.allow(fetcher, INFERENCE, port=8000) is (build == "overlays/scrape")
    assert not policies.allow(pods["wva-nats"], API_SERVER, port=443)


def test_existing_nats_overlay_lets_the_services_reach_the_nats_it_names() -> None:
    policies, pods = _setup("overlays/existing-nats")
    theirs = Endpoint("nats-0", "nats", {"app.kubernetes.io/name": "nats"})
    for service in SERVICES:
        assert policies.allow(pods[f"wva-{service}"], theirs, port=4222)
        assert not policies.allow(pods[f"wva-{service}"], theirs, port=8222)


def test_the_evaluator_follows_the_api_rules() -> None:
    """The semantics the tests above rely on, on hand-made policies."""
    a = Endpoint("a", "ns", {"app": "a"})
    b = Endpoint("b", "ns", {"app": "b"})
    deny_b_ingress = {
        "metadata": {"namespace": "ns"},
        "spec": {"podSelector": {"matchLabels": {"app": "b"}}, "policyTypes": ["Ingress"]},
    }
    assert NetworkPolicies([]).allow(a, b, port=80)  # nothing selects b: everything goes
    assert not NetworkPolicies([deny_b_ingress]).allow(a, b, port=80)
    allow_a = {
        "metadata": {"namespace": "ns"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "b"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "a"}}}], "ports": [{"port": 80}]}],
        },
    }
    both = NetworkPolicies([deny_b_ingress, allow_a])
    assert both.allow(a, b, port=80)  # policies add up
    assert not both.allow(a, b, port=81)
    assert not both.allow(a, b, port=80, protocol="UDP")
    # A podSelector without a namespaceSelector means the policy's own namespace only.
    assert not NetworkPolicies([allow_a]).allow(Endpoint("a", "elsewhere", {"app": "a"}), b, port=80)
    egress_none = {"metadata": {"namespace": "ns"}, "spec": {"podSelector": {}, "policyTypes": ["Egress"]}}
    assert not NetworkPolicies([egress_none]).allow(a, API_SERVER, port=443)
    ip_block = {
        "metadata": {"namespace": "ns"},
        "spec": {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "172.18.0.0/16", "except": ["172.18.1.0/24"]}}]}],
        },
    }
    assert NetworkPolicies([ip_block]).allow(a, API_SERVER, port=443)
    assert not NetworkPolicies([ip_block]).allow(a, Endpoint("x", None, ip="172.18.1.5"), port=443)
    in_a_or_c = {"matchExpressions": [{"key": "app", "operator": "In", "values": ["a", "c"]}]}
    assert netpol.selects(in_a_or_c, a.labels) and not netpol.selects(in_a_or_c, b.labels)
    assert not netpol.selects(
        {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["a"]}]}, a.labels
    )
