"""The WVA-compatible gauges an HPA or KEDA follows, as /metrics shows them: set by decisions, kept
current by targets, gone with their VA (and a model's with its last VA)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from prometheus_client import REGISTRY

from services.scaler import telemetry
from shared.messages import Decision, DecisionNumbers

AT = datetime(2026, 1, 1, tzinfo=UTC)
_names = itertools.count()


def _va() -> tuple[str, str]:
    return ("ns-telemetry", f"va-{next(_names)}")  # each test its own series in the shared registry


def _decision(va: tuple[str, str], *, desired: int, current: int, accelerator: str = "A100", model: str = "m",
              numbers: DecisionNumbers | None = None) -> Decision:  # fmt: skip
    return Decision(
        namespace=va[0], name=va[1], at=AT, model_id=model, accelerator=accelerator, current=current,
        desired=desired, reason="scale_up_saturated", numbers=numbers or DecisionNumbers(),
    )  # fmt: skip


def _value(name: str, va: tuple[str, str], accelerator: str = "A100") -> float | None:
    return REGISTRY.get_sample_value(
        name, {"variant_name": va[1], "namespace": va[0], "accelerator_type": accelerator}
    )


def test_a_decision_sets_the_variants_gauges_and_a_target_its_current_replicas() -> None:
    va = _va()
    telemetry.GAUGES.decided(_decision(va, desired=3, current=2))
    assert (_value("wva_desired_replicas", va), _value("wva_current_replicas", va), _value("wva_desired_ratio", va)) == (
        3.0, 2.0, 1.5,
    )  # fmt: skip
    telemetry.GAUGES.current(va[0], va[1], 3)
    assert (
        _value("wva_current_replicas", va) == 3.0 and _value("wva_desired_ratio", va) == 1.5
    )  # until the next decision
    telemetry.GAUGES.decided(_decision(va, desired=0, current=0))
    assert _value("wva_desired_ratio", va) == 0.0


def test_a_new_accelerator_replaces_the_series_and_a_deleted_va_leaves_none() -> None:
    va = _va()
    telemetry.GAUGES.decided(_decision(va, desired=2, current=2))
    telemetry.GAUGES.decided(_decision(va, desired=2, current=2, accelerator="H100"))
    assert _value("wva_desired_replicas", va) is None and _value("wva_desired_replicas", va, "H100") == 2.0
    telemetry.GAUGES.deleted(*va)
    for name in ("wva_desired_replicas", "wva_current_replicas", "wva_desired_ratio"):
        assert _value(name, va, "H100") is None, name
    telemetry.GAUGES.current(va[0], va[1], 5)  # a target after the deletion brings nothing back
    assert _value("wva_current_replicas", va, "H100") is None


def test_the_models_gauges_follow_its_token_capacity_decisions_and_go_with_its_last_va() -> None:
    a, b = _va(), _va()
    model = f"model-{a[1]}"
    numbers = DecisionNumbers(required=100.0, spare=0.0, demand=900.0, supply=600.0)
    for va in (a, b):
        telemetry.GAUGES.decided(_decision(va, desired=2, current=1, model=model, numbers=numbers))

    def value(name: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"model_name": model, "namespace": a[0]})

    assert (
        value("wva_required_capacity"),
        value("wva_spare_capacity"),
        value("wva_saturation_utilization"),
    ) == (100.0, 0.0, 1.5)
    telemetry.GAUGES.deleted(*a)
    assert value("wva_required_capacity") == 100.0  # b still decides for the model
    telemetry.GAUGES.deleted(*b)
    assert value("wva_required_capacity") is None and value("wva_saturation_utilization") is None
