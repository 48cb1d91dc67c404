"""Kubernetes dicts -> watcher types: VA validation, variantCost parsing, metrics addresses, targets."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from services.watcher import kubeobjects, targets
from shared import kube, variantautoscaling

AT = datetime(2025, 1, 1, tzinfo=UTC)


def va(spec: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    base_spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llama-a100"},
        "modelID": "meta/llama-3.1-8b",
    }
    return {
        "metadata": {"name": "llama-a100", "namespace": "llm", "generation": 3, **meta},
        "spec": {**base_spec, **(spec or {})},
    }


@pytest.mark.parametrize(
    ("raw", "cost", "problem"),
    [
        (None, 10.0, False),  # absent: the CRD's default
        ("10.0", 10.0, False),
        ("0", 0.0, False),
        (" 2.5 ", 2.5, False),
        (7, 7.0, False),  # a number, as manifests for older CRDs have it
        ("-1", 10.0, True),
        ("abc", 10.0, True),
        ("nan", 10.0, True),
        ("inf", 10.0, True),
        ("", 10.0, True),
        (True, 10.0, True),
    ],
)
def test_variant_cost_parsing(raw: Any, cost: float, problem: bool) -> None:
    parsed, found = variantautoscaling.parse_variant_cost(raw)
    assert parsed == cost
    assert (found is not None) == problem
    if found is not None:
        assert found.field == "spec.variantCost"
        assert repr(raw) in found.message


def test_valid_va_has_no_problems_and_takes_defaults() -> None:
    v = variantautoscaling.variant_autoscaling(va(labels={kube.ACCELERATOR_LABEL: "A100"}))
    assert v.problems == ()
    assert (v.variant_cost, v.min_replicas, v.max_replicas, v.accelerator) == (10.0, 1, None, "A100")
    assert v.deployment == "llama-a100"
    assert v.generation == 3


@pytest.mark.parametrize(
    ("spec", "fields"),
    [
        ({"modelID": None}, ["spec.modelID"]),
        ({"modelID": "  "}, ["spec.modelID"]),
        ({"variantCost": "-3"}, ["spec.variantCost"]),
        ({"minReplicas": 3, "maxReplicas": 2}, ["spec.minReplicas"]),
        ({"minReplicas": -1}, ["spec.minReplicas"]),
        ({"maxReplicas": 0}, ["spec.maxReplicas"]),
        ({"scaleTargetRef": {"kind": "StatefulSet", "name": "x"}}, ["spec.scaleTargetRef.kind"]),
        ({"scaleTargetRef": {"kind": "Deployment", "name": "x", "apiVersion": "apps/v1beta1"}}, ["spec.scaleTargetRef.apiVersion"]),
        ({"scaleTargetRef": {"kind": "Deployment"}}, ["spec.scaleTargetRef.name"]),
        ({"scaleTargetRef": None}, ["spec.scaleTargetRef"]),
        # No Deployment can have this name, and consumers refuse a target carrying one.
        ({"scaleTargetRef": {"kind": "Deployment", "name": "../kube-system/coredns"}}, ["spec.scaleTargetRef.name"]),
        ({"modelID": "", "variantCost": "x", "minReplicas": 5, "maxReplicas": 1}, ["spec.modelID", "spec.variantCost", "spec.minReplicas"]),
    ],
)
def test_invalid_va_names_each_field(spec: dict[str, Any], fields: list[str]) -> None:
    v = variantautoscaling.variant_autoscaling(va(spec))
    assert [p.field for p in v.problems] == fields
    assert all(p.message for p in v.problems)


def test_an_invalid_deployment_name_is_not_published() -> None:
    v = variantautoscaling.variant_autoscaling(va({"scaleTargetRef": {"kind": "Deployment", "name": "Bad_Name"}}))
    assert v.target_name == "" and v.deployment is None


def test_min_greater_than_max_message_has_the_numbers() -> None:
    (problem,) = variantautoscaling.variant_autoscaling(va({"minReplicas": 3, "maxReplicas": 2})).problems
    assert "3" in problem.message and "2" in problem.message


def test_non_deployment_target_does_not_resolve() -> None:
    v = variantautoscaling.variant_autoscaling(va({"scaleTargetRef": {"kind": "StatefulSet", "name": "llama-a100"}}))
    d = kubeobjects.deployment(deployment_dict())
    t = targets.build(v, d, [], at=AT)
    assert not t.resolved
    assert t.problems[0].field == "spec.scaleTargetRef.kind"


def test_flags_from_annotations_and_labels() -> None:
    v = variantautoscaling.variant_autoscaling(
        va(
            annotations={kube.PAUSED_ANNOTATION: "true", kube.DRY_RUN_ANNOTATION: "false"},
            labels={kube.CONTROLLER_INSTANCE_LABEL: "blue"},
        )
    )
    assert (v.paused, v.dry_run, v.controller_instance) == (True, False, "blue")


@pytest.mark.parametrize(
    ("labels", "instance", "managed"),
    [
        ({}, None, True),
        ({kube.CONTROLLER_INSTANCE_LABEL: "blue"}, None, False),
        ({kube.CONTROLLER_INSTANCE_LABEL: "blue"}, "blue", True),
        ({kube.CONTROLLER_INSTANCE_LABEL: "green"}, "blue", False),
        ({}, "blue", False),
    ],
)
def test_controller_instance_scoping(labels: dict[str, str], instance: str | None, managed: bool) -> None:
    assert variantautoscaling.manages(labels, instance) is managed


def pod_dict(*, annotations: dict[str, str] | None = None, ports: list[dict[str, Any]] | None = None, ip: str = "10.0.0.7") -> dict[str, Any]:
    return {
        "metadata": {
            "name": "p",
            "namespace": "llm",
            "uid": "pod-uid",
            "annotations": annotations or {},
            "ownerReferences": [{"kind": "ReplicaSet", "name": "rs", "uid": "rs-uid", "controller": True}],
        },
        "spec": {"containers": [{"name": "vllm", "ports": ports or []}]},
        "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]},
    }


@pytest.mark.parametrize(
    ("annotations", "ports", "address"),
    [
        ({"prometheus.io/port": "9400"}, [{"name": "metrics", "containerPort": 9100}], "10.0.0.7:9400"),
        ({}, [{"name": "http", "containerPort": 8080}, {"name": "metrics", "containerPort": 9100}], "10.0.0.7:9100"),
        ({}, [{"name": "grpc", "containerPort": 9000}, {"name": "http", "containerPort": 8080}], "10.0.0.7:8080"),
        ({}, [{"containerPort": 9000}], "10.0.0.7:8000"),
        ({"prometheus.io/port": "nope"}, [], "10.0.0.7:8000"),
    ],
)
def test_metrics_address(annotations: dict[str, str], ports: list[dict[str, Any]], address: str) -> None:
    p = kubeobjects.pod(pod_dict(annotations=annotations, ports=ports))
    assert p.address == address
    assert (p.owner_uid, p.ready, p.phase) == ("rs-uid", True, "Running")


def test_pod_without_ip_has_no_address_and_ipv6_is_bracketed() -> None:
    assert kubeobjects.pod(pod_dict(ip="")).address == ""
    assert kubeobjects.pod(pod_dict(ip="fd00::7")).address == "[fd00::7]:8000"


def deployment_dict(*, replicas: int | None = 2, image: str = "vllm:1") -> dict[str, Any]:
    spec: dict[str, Any] = {"template": {"spec": {"containers": [{"name": "vllm", "image": image}]}}}
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "metadata": {"name": "llama-a100", "namespace": "llm", "uid": "d-uid", "generation": 4},
        "spec": spec,
        "status": {"readyReplicas": 1, "updatedReplicas": 2, "availableReplicas": 1},
    }


def test_deployment_template_hash_follows_the_template_only() -> None:
    a = kubeobjects.deployment(deployment_dict())
    assert a.template_hash == kubeobjects.deployment(deployment_dict(replicas=5)).template_hash
    assert a.template_hash != kubeobjects.deployment(deployment_dict(image="vllm:2")).template_hash
    assert kubeobjects.deployment(deployment_dict(replicas=None)).spec_replicas == 1  # the API's default


def test_target_carries_deployment_and_member_pods_sorted() -> None:
    v = variantautoscaling.variant_autoscaling(va({"variantCost": "3.5", "minReplicas": 2, "maxReplicas": 6}))
    d = kubeobjects.deployment(deployment_dict())
    ready = kubeobjects.pod(pod_dict())
    other = kubeobjects.pod({**pod_dict(), "metadata": {**pod_dict()["metadata"], "name": "a"}, "status": {"phase": "Pending"}})
    gone = kubeobjects.pod({**pod_dict(), "metadata": {**pod_dict()["metadata"], "name": "z", "deletionTimestamp": "x"}})
    t = targets.build(v, d, [ready, gone, other], at=AT)
    assert t.resolved
    assert (t.variant_cost, t.min_replicas, t.max_replicas) == (3.5, 2, 6)
    assert (t.deployment_generation, t.spec_replicas, t.ready_replicas, t.updated_replicas, t.available_replicas) == (4, 2, 1, 2, 1)
    assert t.template_hash == d.template_hash
    assert [(p.name, p.ready, p.phase, p.address) for p in t.pods] == [
        ("a", False, "Pending", ""),
        ("p", True, "Running", "10.0.0.7:8000"),
    ]


def test_target_without_deployment_is_unresolved() -> None:
    t = targets.build(variantautoscaling.variant_autoscaling(va()), None, [], at=AT)
    assert not t.resolved
    assert (t.spec_replicas, t.template_hash, t.pods) == (0, "", ())
    assert t.scale_target.name == "llama-a100"
