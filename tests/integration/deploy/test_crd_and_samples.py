"""The CRD is a valid schema, and every VA shipped (wva's own and the one in WVA's upstream shape)
validates against it; the HPA/KEDA samples follow the metric the scaler really exports."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
import yaml

from services.scaler import telemetry as scaler_metrics
from shared import kube
from tests.integration.deploy import manifests
from tests.integration.deploy.manifests import DEPLOY

CRD_PATH = DEPLOY / "crd" / "variantautoscalings.llmd.ai.yaml"


def _schema() -> dict[str, Any]:
    crd = manifests.load(CRD_PATH)[0]
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == kube.VERSION]
    return dict(version["schema"]["openAPIV3Schema"])


def _vas() -> list[dict[str, Any]]:
    return [d for p in manifests.manifest_files() for d in manifests.load(p) if d["kind"] == kube.KIND]


def test_crd_names_match_what_the_services_use() -> None:
    crd = manifests.load(CRD_PATH)[0]
    assert crd["metadata"]["name"] == f"{kube.PLURAL}.{kube.GROUP}"
    assert crd["spec"]["group"] == kube.GROUP and crd["spec"]["names"]["kind"] == kube.KIND
    assert crd["spec"]["scope"] == "Namespaced"
    (version,) = crd["spec"]["versions"]
    assert version["subresources"] == {"status": {}}  # the scaler patches variantautoscalings/status


def test_crd_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft4Validator.check_schema(_schema())


def test_shipped_vas_validate_against_the_crd() -> None:
    vas = _vas()
    assert len(vas) >= 2
    validator = jsonschema.Draft4Validator(_schema())
    for va in vas:
        errors = sorted(validator.iter_errors(va), key=str)
        assert not errors, f"{va['metadata']['name']}: {[e.message for e in errors]}"


def test_a_va_in_wva_upstream_shape_is_shipped_and_valid() -> None:
    (va,) = manifests.load(DEPLOY / "samples" / "va-llama-8b-h100-wva-upstream.yaml")
    assert va["apiVersion"] == "llmd.ai/v1alpha1"
    assert set(va["spec"]) == {"scaleTargetRef", "modelID", "variantCost"}
    assert va["spec"]["scaleTargetRef"] == {"kind": "Deployment", "name": "llama-8b-h100"}
    assert kube.ACCELERATOR_LABEL in va["metadata"]["labels"]
    jsonschema.validate(va, _schema(), cls=jsonschema.Draft4Validator)


def test_an_invalid_va_is_rejected_by_the_schema() -> None:
    (va,) = manifests.load(DEPLOY / "samples" / "va-llama-8b-a100.yaml")
    del va["spec"]["modelID"]
    va["spec"]["variantCost"] = "cheap"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(va, _schema(), cls=jsonschema.Draft4Validator)


def test_every_sample_va_targets_a_sample_deployment() -> None:
    docs = manifests.build(DEPLOY / "samples")
    deployments = {
        (d["metadata"]["namespace"], d["metadata"]["name"]) for d in manifests.find(docs, "Deployment")
    }
    for va in manifests.find(docs, kube.KIND):
        assert (va["metadata"]["namespace"], va["spec"]["scaleTargetRef"]["name"]) in deployments


def test_hpa_sample_follows_the_scalers_gauge_for_a_sample_variant() -> None:
    (hpa,) = manifests.load(DEPLOY / "overlays/hpa/hpa-sample.yaml")
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["metric"]["name"] == scaler_metrics.DESIRED
    assert set(metric["external"]["metric"]["selector"]["matchLabels"]) <= set(scaler_metrics.LABELS)
    assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "1"}
    variant = metric["external"]["metric"]["selector"]["matchLabels"]["variant_name"]
    va = manifests.one(manifests.build(DEPLOY / "samples"), kube.KIND, variant)
    assert hpa["metadata"]["namespace"] == va["metadata"]["namespace"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == va["spec"]["scaleTargetRef"]["name"]


def test_prometheus_adapter_rule_serves_the_gauge_per_namespace() -> None:
    values = yaml.safe_load((DEPLOY / "overlays/hpa/prometheus-adapter-values.yaml").read_text())
    (rule,) = values["rules"]["external"]
    assert rule["seriesQuery"].startswith(scaler_metrics.DESIRED + "{")
    assert rule["name"]["as"] == scaler_metrics.DESIRED
    assert rule["resources"]["overrides"]["namespace"] == {"resource": "namespace"}
    assert "<<.LabelMatchers>>" in rule["metricsQuery"]


def test_keda_sample_queries_the_gauge_with_the_same_arithmetic() -> None:
    (so,) = manifests.load(DEPLOY / "overlays/hpa/keda-scaledobject-sample.yaml")
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    assert trigger["metadata"]["threshold"] == "1"
    assert f"{scaler_metrics.DESIRED}{{" in trigger["metadata"]["query"]
    assert 'variant_name="llama-8b-a100"' in trigger["metadata"]["query"]
