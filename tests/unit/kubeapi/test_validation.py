import copy
from pathlib import Path
from typing import Any

import pytest

from services.sandbox.kubeapi import errors, resources
from services.sandbox.kubeapi.validation import DEFAULT_CRD_PATH, Admission, CrdSchema

# A VA as Workload Variant Autoscaler's samples write it (config/samples), plus WVA status fields.
WVA_VA: dict[str, Any] = {
    "apiVersion": "llmd.ai/v1alpha1",
    "kind": "VariantAutoscaling",
    "metadata": {"name": "llama-8b-a100", "namespace": "llm-d-sim", "labels": {"inference.optimization/acceleratorName": "A100"}},
    "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llama-8b-a100"},
        "modelID": "meta/llama-3.1-8b",
        "variantCost": "40.0",
        "maxReplicas": 8,
    },
    "status": {
        "desiredOptimizedAlloc": {"accelerator": "A100", "numReplicas": 2, "lastRunTime": "2025-01-01T00:00:00Z"},
        "actuation": {"applied": True},
        "conditions": [
            {"type": "MetricsAvailable", "status": "True", "reason": "MetricsFound", "message": "ok",
             "lastTransitionTime": "2025-01-01T00:00:00Z"}
        ],
    },
}


@pytest.fixture(scope="module")
def admission() -> Admission:
    return Admission()


def _admit(admission: Admission, obj: dict[str, Any]) -> dict[str, Any]:
    out = admission.default(resources.VARIANT_AUTOSCALINGS, copy.deepcopy(obj))
    admission.validate(resources.VARIANT_AUTOSCALINGS, out)
    return out


def test_wva_shaped_va_is_accepted_and_defaulted(admission: Admission) -> None:
    va = copy.deepcopy(WVA_VA)
    del va["spec"]["variantCost"]
    admitted = _admit(admission, va)
    assert admitted["spec"]["variantCost"] == "10.0"
    assert admitted["spec"]["minReplicas"] == 1


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda s: s.pop("modelID"), "spec.modelID"),
        (lambda s: s.pop("scaleTargetRef"), "spec.scaleTargetRef"),
        (lambda s: s["scaleTargetRef"].pop("name"), "spec.scaleTargetRef.name"),
        (lambda s: s.update(variantCost="ten"), "spec.variantCost"),
        (lambda s: s.update(minReplicas=-1), "spec.minReplicas"),
        (lambda s: s.update(maxReplicas=0), "spec.maxReplicas"),
        (lambda s: s.update(minReplicas=5, maxReplicas=2), "spec"),
    ],
)
def test_invalid_va_is_422_naming_the_field(admission: Admission, mutate: Any, field: str) -> None:
    va = copy.deepcopy(WVA_VA)
    mutate(va["spec"])
    with pytest.raises(errors.ApiError) as err:
        _admit(admission, va)
    assert err.value.code == 422
    assert field in [c["field"] for c in err.value.status()["details"]["causes"]]


def test_min_replicas_equal_to_max_is_fine_and_unbounded_max_is_fine(admission: Admission) -> None:
    va = copy.deepcopy(WVA_VA)
    va["spec"].update(minReplicas=3, maxReplicas=3)
    _admit(admission, va)
    del va["spec"]["maxReplicas"]
    _admit(admission, va)


def test_a_crd_with_an_unknown_cel_rule_is_refused() -> None:
    crd = CrdSchema.load(DEFAULT_CRD_PATH).crd
    crd = copy.deepcopy(crd)
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"] = [
        {"rule": "self.modelID.startsWith('meta')"}
    ]
    with pytest.raises(ValueError, match="CEL"):
        CrdSchema(crd)


def test_shipped_crd_is_a_v1_crd_with_status_subresource_and_columns() -> None:
    schema = CrdSchema.load(DEFAULT_CRD_PATH)
    assert schema.crd["apiVersion"] == "apiextensions.k8s.io/v1"
    version = schema.crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert {c["name"] for c in schema.printer_columns} >= {"Model", "Optimized", "Age"}


def test_the_packaged_crd_is_the_deploy_crd() -> None:
    # deploy/crd/ is the source; the sandbox ships a copy as package data (an installed wva has no
    # deploy/). Copy it again when this fails: cp deploy/crd/variantautoscalings.llmd.ai.yaml services/sandbox/kubeapi/
    source = Path(__file__).resolve().parents[3] / "deploy" / "crd" / "variantautoscalings.llmd.ai.yaml"
    assert DEFAULT_CRD_PATH.read_bytes() == source.read_bytes()
