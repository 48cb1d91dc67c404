"""ScalingConfig defaults and validation, and the WVA-compatible ConfigMap."""

from __future__ import annotations

import pytest

from services.scaler.scaling_config import (
    ConfigSet,
    ScaleToZeroConfig,
    ScalingConfig,
    ScalingConfigError,
    apply_configmap,
    parse_config,
    parse_configmap,
)


def test_defaults_match_algorithms_md() -> None:
    c = ScalingConfig()
    assert (c.kv_cache_threshold, c.queue_length_threshold, c.kv_spare_trigger, c.queue_spare_trigger) == (
        0.80,
        5,
        0.10,
        3,
    )
    assert (c.scale_up_step, c.max_scale_up_step) == ("proportional", 4)
    assert (c.scale_down_stabilization_seconds, c.stale_after_seconds) == (120, 45)
    assert c.scale_to_zero == ScaleToZeroConfig(enabled=False, retention_seconds=600)
    assert c.validate() == []


def test_parse_uses_wva_key_names() -> None:
    c = parse_config(
        {
            "kvCacheThreshold": 0.75,
            "queueLengthThreshold": 10,
            "kvSpareTrigger": 0.15,
            "queueSpareTrigger": 5,
            "scaleUpStep": "one",
            "maxScaleUpStep": 2,
            "scaleDownStabilizationSeconds": 60,
            "staleAfterSeconds": 30,
            "scaleToZero": {"enabled": True, "retentionSeconds": 300},
        }
    )
    assert c == ScalingConfig(
        kv_cache_threshold=0.75,
        queue_length_threshold=10,
        kv_spare_trigger=0.15,
        queue_spare_trigger=5,
        scale_up_step="one",
        max_scale_up_step=2,
        scale_down_stabilization_seconds=60,
        stale_after_seconds=30,
        scale_to_zero=ScaleToZeroConfig(enabled=True, retention_seconds=300),
    )


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"kvCacheThreshold": 1.5}, "kvCacheThreshold"),
        ({"kvSpareTrigger": -0.1}, "kvSpareTrigger"),
        ({"queueLengthThreshold": -1}, "queueLengthThreshold"),
        ({"queueSpareTrigger": -2}, "queueSpareTrigger"),
        ({"kvCacheThreshold": 0.3, "kvSpareTrigger": 0.4}, "kvCacheThreshold (0.3) must be >= kvSpareTrigger"),
        ({"queueLengthThreshold": 2}, "queueLengthThreshold (2.0) must be >= queueSpareTrigger"),
        ({"maxScaleUpStep": 0}, "maxScaleUpStep"),
        ({"maxScaleUpStep": 1.5}, "maxScaleUpStep"),
        ({"scaleUpStep": "double"}, "scaleUpStep"),
        ({"staleAfterSeconds": 0}, "staleAfterSeconds"),
        ({"kvCacheThreshold": "high"}, "kvCacheThreshold"),
        ({"kvCacheThreshold": True}, "kvCacheThreshold"),
        ({"kvCacheThreshold": float("nan")}, "kvCacheThreshold"),
        ({"scaleToZero": {"enabled": "yes"}}, "scaleToZero.enabled"),
        ({"scaleToZero": {"retentionSeconds": -1}}, "scaleToZero.retentionSeconds"),
        ({"scaleToZero": {"retention": 5}}, "scaleToZero.retention"),
        ({"kvCacheTreshold": 0.9}, "kvCacheTreshold"),
        # A zero threshold saturates every replica: an idle model would grow forever.
        ({"kvCacheThreshold": 0, "kvSpareTrigger": 0}, "kvCacheThreshold must be in (0, 1], got 0"),
        ({"queueLengthThreshold": 0, "queueSpareTrigger": 0}, "queueLengthThreshold must be > 0, got 0"),
        ({"scaleDownStep": "all"}, "scaleDownStep"),
        ({"analyzer": "v3"}, "analyzer must be one of v1, v2, slo"),
        ({"targetITL": 0}, "targetITL must be > 0 (milliseconds), got 0"),
        ({"targetTTFT": -5}, "targetTTFT must be > 0"),
        ({"targetITL": "fast"}, "targetITL"),
    ],
)
def test_invalid_values_name_their_key(data: dict[str, object], key: str) -> None:
    with pytest.raises(ScalingConfigError) as info:
        parse_config(data)
    assert key in str(info.value)
    assert str(info.value).startswith("default: ")


def test_slo_targets_parse_in_milliseconds() -> None:
    c = parse_config({"analyzer": "slo", "targetTTFT": 1500, "targetITL": 80})
    assert (c.analyzer, c.target_ttft_ms, c.target_itl_ms) == ("slo", 1500.0, 80.0)


def test_all_errors_of_a_kind_are_reported_at_once() -> None:
    # Type errors and unknown keys together; value ranges are checked once every value has a type.
    with pytest.raises(ScalingConfigError) as info:
        parse_config({"kvCacheThreshold": "x", "queueSpareTrigger": "y", "bogus": 1})
    assert len(info.value.errors) == 3
    with pytest.raises(ScalingConfigError) as info:
        parse_config({"kvCacheThreshold": 2, "queueSpareTrigger": -1})
    assert len(info.value.errors) == 2


def test_wva_only_keys_are_accepted_with_a_warning() -> None:
    warnings: list[str] = []
    c = parse_config({"kvCacheThreshold": 0.8, "enableLimiter": True, "analyzerName": ""}, warnings=warnings)
    assert c == ScalingConfig()
    assert len(warnings) == 2
    assert "enableLimiter" in warnings[0]


DEFAULT_YAML = """
kvCacheThreshold: 0.80
queueLengthThreshold: 5
kvSpareTrigger: 0.1
queueSpareTrigger: 3
"""


def test_configmap_default_and_overrides() -> None:
    configs = parse_configmap(
        {
            "default": DEFAULT_YAML + "scaleToZero:\n  enabled: true\n",
            # WVA's newer form: the key names model and namespace.
            "ibm/granite-13b#production": "kvCacheThreshold: 0.85\nkvSpareTrigger: 0.15\n",
            # WVA's older form: fields inside the entry.
            "llama-lab": "model_id: meta/llama-70b\nnamespace: lab\nqueueLengthThreshold: 20\nqueueSpareTrigger: 10\n",
            "granite-any-namespace": "model_id: ibm/granite-13b\nkvCacheThreshold: 0.9\n",
            "staging": "namespace: staging\nscaleDownStabilizationSeconds: 0\n",
        }
    )
    granite_prod = configs.resolve("production", "ibm/granite-13b")
    assert (granite_prod.kv_cache_threshold, granite_prod.kv_spare_trigger) == (0.85, 0.15)
    # Unnamed fields inherit from default, including wva's own settings.
    assert granite_prod.queue_length_threshold == 5
    assert granite_prod.scale_to_zero.enabled
    assert configs.resolve("lab", "meta/llama-70b").queue_length_threshold == 20
    # model_id alone: every namespace; model beats namespace.
    assert configs.resolve("staging", "ibm/granite-13b").kv_cache_threshold == 0.9
    assert configs.resolve("staging", "other").scale_down_stabilization_seconds == 0
    assert configs.resolve("elsewhere", "other") == configs.default
    # An override may set a value to zero (WVA's merge could not).
    assert configs.resolve("staging", "other").kv_cache_threshold == 0.80


def test_configmap_without_default_uses_builtin_defaults() -> None:
    configs = parse_configmap({"m#ns": "kvCacheThreshold: 0.9\n"})
    assert configs.default == ScalingConfig()
    assert configs.resolve("ns", "m").kv_cache_threshold == 0.9


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"default": "kvCacheThreshold: [1"}, "default: not valid YAML"),
        ({"default": "- 1\n- 2\n"}, "default: must be a YAML mapping"),
        ({"loose": "kvCacheThreshold: 0.9\n"}, "loose: an override must name a model_id and/or a namespace"),
        ({"x": "model_id: m\nnamespace: n\n", "m#n": "kvCacheThreshold: 0.9\n"}, "same model_id/namespace"),
        ({"m#n": "kvSpareTrigger: 0.9\n"}, "m#n: kvCacheThreshold (0.8) must be >= kvSpareTrigger (0.9)"),
    ],
)
def test_configmap_errors(data: dict[str, str], fragment: str) -> None:
    with pytest.raises(ScalingConfigError) as info:
        parse_configmap(data)
    assert fragment in str(info.value)


def test_apply_keeps_the_last_valid_configuration() -> None:
    first = apply_configmap(ConfigSet(), {"default": "kvCacheThreshold: 0.9\n"})
    assert first.applied and first.errors == ()
    assert first.configs.default.kv_cache_threshold == 0.9

    bad = apply_configmap(first.configs, {"default": "kvCacheThreshold: 0.9\nkvSpareTrigger: 2\n"})
    assert not bad.applied
    assert bad.configs is first.configs
    assert any("kvSpareTrigger" in e for e in bad.errors)

    deleted = apply_configmap(first.configs, None)
    assert deleted.applied and deleted.configs == ConfigSet()


def test_apply_reports_warnings() -> None:
    update = apply_configmap(ConfigSet(), {"default": DEFAULT_YAML + "priority: 2\n"})
    assert update.applied
    assert update.warnings == ("default: priority is a WVA setting wva does not use; ignored",)
