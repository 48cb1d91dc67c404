"""What a set of NetworkPolicies allows, evaluated offline from the rules of the NetworkPolicy API
(networking.k8s.io/v1): a connection needs the egress side of its source and the ingress side of its
destination; a pod selected by no policy of a type is not isolated for that type; policies add up.
Node traffic (the kubelet's probes), which NetworkPolicy always allows, is not modelled.

The schema of every policy is checked by kubernetes-validate in test_manifests; this module checks what
the policies mean. No CNI runs here, so it checks the rules as the API defines them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Doc = dict[str, Any]


@dataclass(frozen=True)
class Endpoint:
    """A pod (namespace set) or an address outside the pod network (namespace None)."""

    name: str
    namespace: str | None
    labels: Mapping[str, str] = field(default_factory=dict)
    ip: str = "10.244.0.10"


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A LabelSelector ({} selects everything)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        key, op, values = e["key"], e["operator"], e.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def _namespace_labels(namespace: str) -> dict[str, str]:
    return {"kubernetes.io/metadata.name": namespace}  # set by the API server on every namespace


def _peer_matches(peer: Mapping[str, Any], other: Endpoint, *, namespace: str) -> bool:
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        ip = ipaddress.ip_address(other.ip)
        return ip in ipaddress.ip_network(block["cidr"]) and not any(
            ip in ipaddress.ip_network(e) for e in block.get("except", [])
        )
    if other.namespace is None:
        return False  # pod and namespace selectors only ever select pods
    if "namespaceSelector" in peer:
        namespace_ok = selects(peer["namespaceSelector"], _namespace_labels(other.namespace))
    else:
        namespace_ok = other.namespace == namespace
    return namespace_ok and selects(peer.get("podSelector", {}), other.labels)


def _port_matches(ports: Sequence[Mapping[str, Any]] | None, *, port: int, protocol: str) -> bool:
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        if "port" not in p:
            return True
        assert isinstance(p["port"], int), f"named ports are not modelled: {p}"
        if p["port"] <= port <= p.get("endPort", p["port"]):
            return True
    return False


class NetworkPolicies:
    """The NetworkPolicy objects of one build (or hand-made ones)."""

    def __init__(self, docs: list[Doc]) -> None:
        self.policies = [d for d in docs if d.get("kind", "NetworkPolicy") == "NetworkPolicy"]

    def _selecting(self, pod: Endpoint, kind: str) -> list[Doc]:
        return [
            p
            for p in self.policies
            if pod.namespace is not None
            and p["metadata"]["namespace"] == pod.namespace
            and kind in p["spec"].get("policyTypes", ["Ingress"])
            and selects(p["spec"]["podSelector"], pod.labels)
        ]

    def isolates(self, pod: Endpoint, kind: str) -> bool:
        """Whether `pod` is isolated for `kind` ("Ingress" or "Egress")."""
        return bool(self._selecting(pod, kind))

    def _side_allows(self, pod: Endpoint, other: Endpoint, *, port: int, protocol: str, kind: str) -> bool:
        selecting = self._selecting(pod, kind)
        if not selecting:
            return True  # a pod no policy isolates
        rules_key, peers_key = ("ingress", "from") if kind == "Ingress" else ("egress", "to")
        for policy in selecting:
            for rule in policy["spec"].get(rules_key, []):
                peers = rule.get(peers_key)
                namespace = policy["metadata"]["namespace"]
                peer_ok = not peers or any(_peer_matches(p, other, namespace=namespace) for p in peers)
                if peer_ok and _port_matches(rule.get("ports"), port=port, protocol=protocol):
                    return True
        return False

    def allow(self, source: Endpoint, destination: Endpoint, *, port: int, protocol: str = "TCP") -> bool:
        """Whether `source` may open a connection to `destination`:`port`. No policy applies to an
        address outside the pod network, only to the pod at the other end."""
        egress = source.namespace is None or self._side_allows(
            source, destination, port=port, protocol=protocol, kind="Egress"
        )
        ingress = destination.namespace is None or self._side_allows(
            destination, source, port=port, protocol=protocol, kind="Ingress"
        )
        return egress and ingress


def pods_of(docs: list[Doc]) -> dict[str, Endpoint]:
    """One Endpoint per Deployment or StatefulSet of a build, by workload name, with its pods' labels."""
    return {
        w["metadata"]["name"]: Endpoint(
            name=w["metadata"]["name"],
            namespace=w["metadata"]["namespace"],
            labels=dict(w["spec"]["template"]["metadata"]["labels"]),
        )
        for w in docs
        if w["kind"] in ("Deployment", "StatefulSet")
    }
