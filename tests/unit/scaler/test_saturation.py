"""The V1 saturation analysis against every worked example of docs/algorithms.md, and the step sizes."""

from __future__ import annotations

import pytest

from services.scaler.analyzers.saturation import analyze, needed_replicas, scale_up_step
from services.scaler.scaling_config import ScalingConfig

DEFAULTS = ScalingConfig()


def kv_only(*kv: float) -> list[tuple[float, float]]:
    return [(k, 0.0) for k in kv]


# docs/algorithms.md "Worked examples (defaults, one variant, queue 0 everywhere)".
@pytest.mark.parametrize(
    ("kv", "avg_spare_kv", "outcome"),
    [
        ((0.65, 0.72), 0.115, "hold"),  # load 0.685 -> 1.37 with one fewer: spare -0.57 < 0.10
        ((0.65, 0.76), 0.095, "up"),  # 0.095 < 0.10
        ((0.20, 0.20), 0.60, "down"),  # load 0.20 -> 0.40, spare 0.40 >= 0.10; queue spare 5 >= 3
        ((0.85, 0.90), 0.0, "up"),  # no non-saturated replica
    ],
)
def test_worked_examples_one_variant(kv: tuple[float, ...], avg_spare_kv: float, outcome: str) -> None:
    a = analyze(kv_only(*kv), DEFAULTS)
    assert a.avg_spare_kv == pytest.approx(avg_spare_kv)
    got = "up" if a.scale_up else "down" if a.scale_down_safe else "hold"
    assert got == outcome


def test_all_saturated_counts_and_trigger() -> None:
    a = analyze(kv_only(0.85, 0.90), DEFAULTS)
    assert (a.replicas, a.saturated, a.non_saturated) == (2, 2, 0)
    assert (a.avg_spare_kv, a.avg_spare_queue) == (0.0, 0.0)
    assert a.trigger == "saturated"


def test_spare_triggers_name_their_cause() -> None:
    assert analyze(kv_only(0.65, 0.76), DEFAULTS).trigger == "spare_kv"
    # KV fine (spare 0.6) but queues 3 and 2: spare 2 and 3, average 2.5 < 3.
    a = analyze([(0.2, 3.0), (0.2, 2.0)], DEFAULTS)
    assert a.avg_spare_queue == pytest.approx(2.5)
    assert a.trigger == "spare_queue"


def test_queue_at_threshold_is_saturated() -> None:
    a = analyze([(0.1, 5.0), (0.1, 4.0)], DEFAULTS)
    assert (a.saturated, a.non_saturated) == (1, 1)
    assert a.avg_spare_queue == pytest.approx(1.0)  # 5 - 4, over the one non-saturated replica


def test_trigger_is_strict() -> None:
    # 0.70 twice: average spare exactly 0.10, which is not below 0.10.
    a = analyze(kv_only(0.70, 0.70), DEFAULTS)
    assert a.avg_spare_kv == pytest.approx(0.10)
    assert not a.scale_up
    # queue 2 everywhere: spare exactly 3, not below 3.
    assert not analyze([(0.0, 2.0), (0.0, 2.0)], DEFAULTS).scale_up


def test_scale_down_needs_two_non_saturated_replicas() -> None:
    assert not analyze(kv_only(0.05), DEFAULTS).scale_down_safe
    # One saturated plus one idle replica: N = 1.
    assert not analyze(kv_only(0.95, 0.05), DEFAULTS).scale_down_safe


def test_scale_down_checks_queue_too() -> None:
    # KV idle but 1.5 waiting each: spare queue 3.5, load 1.5 -> 3.0 with one fewer, spare 2 < 3.
    a = analyze([(0.0, 1.5), (0.0, 1.5)], DEFAULTS)
    assert not a.scale_up
    assert not a.scale_down_safe


# Two variants of one model (docs/algorithms.md): the analysis pools every replica of the group.
def test_two_variant_examples_pool_the_replicas() -> None:
    up = analyze(kv_only(0.79, 0.78), DEFAULTS)  # A at 0.79, B at 0.78
    assert up.avg_spare_kv == pytest.approx(0.015)
    assert up.trigger == "spare_kv"

    down = analyze(kv_only(0.10, 0.15, 0.12), DEFAULTS)  # A at 0.10, B at 0.15 and 0.12
    assert down.avg_spare_kv == pytest.approx(0.6767, abs=1e-4)
    # load 0.1233 -> 0.185 with one fewer, spare 0.615 >= 0.10
    assert down.scale_down_safe

    one_each = analyze(kv_only(0.10, 0.15), DEFAULTS)
    assert one_each.scale_down_safe  # safe; the hold comes from the variants' bounds (see test_choice)


# docs/algorithms.md "Step size".
@pytest.mark.parametrize(
    ("loads", "needed", "step"),
    [
        (kv_only(0.85, 0.90), 3, 1),  # ceil(1.75 / 0.70) = 3, step 3 - 2 = 1
        (kv_only(0.95, 0.95, 0.95, 0.95), 6, 2),  # ceil(3.8 / 0.70) = 6, step 2
        ([(0.0, 10.0), (0.0, 10.0)], 10, 4),  # ceil(20 / 2) = 10, step 8 capped to 4
    ],
)
def test_proportional_step_examples(loads: list[tuple[float, float]], needed: int, step: int) -> None:
    a = analyze(loads, DEFAULTS)
    assert a.scale_up
    assert scale_up_step(a, DEFAULTS, current=len(loads)) == (needed, step)


def test_step_cap_is_configurable() -> None:
    a = analyze([(0.0, 10.0), (0.0, 10.0)], DEFAULTS)
    assert scale_up_step(a, ScalingConfig(max_scale_up_step=10), current=2) == (10, 8)


def test_step_is_at_least_one() -> None:
    # queueSpareTrigger 0: one replica with 5 waiting is saturated, yet ceil(5 / 5) = 1 = current.
    cfg = ScalingConfig(queue_spare_trigger=0.0)
    a = analyze([(0.0, 5.0)], cfg)
    assert a.trigger == "saturated"
    assert scale_up_step(a, cfg, current=1) == (1, 1)


def test_step_one_mode_adds_one() -> None:
    cfg = ScalingConfig(scale_up_step="one")
    a = analyze(kv_only(0.95, 0.95, 0.95, 0.95), cfg)
    assert scale_up_step(a, cfg, current=4) == (6, 1)


def test_needed_skips_a_zero_room_term() -> None:
    cfg = ScalingConfig(queue_length_threshold=3.0, queue_spare_trigger=3.0)
    a = analyze(kv_only(0.95, 0.95), cfg)
    assert needed_replicas(a, cfg) == 3  # ceil(1.9 / 0.70); the queue term would divide by zero
