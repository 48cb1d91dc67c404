"""Saturation scaling configuration, compatible with WVA's ``saturation-scaling-config`` ConfigMap.

The ConfigMap's ``data`` holds YAML strings. Key ``default`` is the global configuration; every other
key is an override for a model and/or a namespace. Like WVA, an entry names what it applies to with
the fields ``model_id`` and ``namespace`` inside its YAML, or (WVA's newer form) with its key
``"<modelID>#<namespace>"``; fields win over the key. Either part may be empty: ``model_id`` alone
applies to that model in every namespace, ``namespace`` alone to every model of that namespace.

Resolution for (namespace, model): ``model#namespace`` entry, else the ``model`` entry, else the
``namespace`` entry, else ``default``. Every override is merged field by field onto ``default``
(only the keys it names change), so an override may set a value to zero, unlike WVA's non-zero
merge. Without a ``default`` key the built-in defaults below apply (WVA would use zeros).

Keys keep WVA's names: ``kvCacheThreshold``, ``queueLengthThreshold``, ``kvSpareTrigger``,
``queueSpareTrigger``; wva adds ``scaleUpStep`` (``proportional`` | ``one``), ``maxScaleUpStep``,
``scaleDownStep`` (``one`` | ``proportional``), ``analyzer`` (``v1`` | ``v2`` | ``slo``), V2's
``scaleUpThreshold`` and ``scaleDownBoundary``, the SLO analyzer's ``targetTTFT`` and ``targetITL`` (ms),
``scaleDownStabilizationSeconds``, ``staleAfterSeconds`` and ``scaleToZero: {enabled,
retentionSeconds}``. WVA keys that wva does not use (``analyzerName``, ``enableLimiter`` …) are
accepted and reported as warnings; any other key is an error, so a typo never passes silently.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Final, Literal

import yaml

ScaleUpStep = Literal["proportional", "one"]
ScaleDownStep = Literal["one", "proportional"]
AnalyzerName = Literal["v1", "v2", "slo"]
ANALYZERS: Final[tuple[str, ...]] = ("v1", "v2", "slo")

DEFAULT_KEY: Final = "default"


class ScalingConfigError(ValueError):
    """Invalid saturation configuration. ``errors`` holds one message per problem, each naming its key."""

    def __init__(self, errors: list[str] | tuple[str, ...]) -> None:
        self.errors: tuple[str, ...] = tuple(errors)
        super().__init__("; ".join(self.errors))


@dataclass(frozen=True, slots=True)
class ScaleToZeroConfig:
    enabled: bool = False
    retention_seconds: float = 600.0


@dataclass(frozen=True, slots=True)
class ScalingConfig:
    """V1 saturation thresholds plus wva's step, stability and scale-to-zero settings (docs/algorithms.md)."""

    kv_cache_threshold: float = 0.80
    queue_length_threshold: float = 5.0
    kv_spare_trigger: float = 0.10
    queue_spare_trigger: float = 3.0
    scale_up_step: ScaleUpStep = "proportional"
    max_scale_up_step: int = 4
    scale_down_step: ScaleDownStep = "one"
    analyzer: AnalyzerName = "slo"
    scale_up_threshold: float = 0.85  # V2: scale up when demand exceeds this share of anticipated supply
    scale_down_boundary: float = 0.70  # V2: spare capacity is supply beyond demand / this
    target_ttft_ms: float = 2000.0  # SLO analyzer: the model's latency targets
    target_itl_ms: float = 100.0
    scale_down_stabilization_seconds: float = 120.0
    stale_after_seconds: float = 45.0
    scale_to_zero: ScaleToZeroConfig = field(default_factory=ScaleToZeroConfig)

    def validate(self) -> list[str]:
        """Problems with this configuration, each naming its key (empty when valid)."""
        errors: list[str] = []
        # A threshold of 0 makes every replica saturated, so an idle model would grow forever.
        if not 0.0 < self.kv_cache_threshold <= 1.0:
            errors.append(f"kvCacheThreshold must be in (0, 1], got {self.kv_cache_threshold}")
        if not 0.0 <= self.kv_spare_trigger <= 1.0:
            errors.append(f"kvSpareTrigger must be in [0, 1], got {self.kv_spare_trigger}")
        if not self.queue_length_threshold > 0.0:
            errors.append(f"queueLengthThreshold must be > 0, got {self.queue_length_threshold}")
        for key, value in (
            ("queueSpareTrigger", self.queue_spare_trigger),
            ("scaleDownStabilizationSeconds", self.scale_down_stabilization_seconds),
            ("scaleToZero.retentionSeconds", self.scale_to_zero.retention_seconds),
        ):
            if not value >= 0.0:
                errors.append(f"{key} must be >= 0, got {value}")
        if not self.stale_after_seconds > 0.0:
            errors.append(f"staleAfterSeconds must be > 0, got {self.stale_after_seconds}")
        if self.max_scale_up_step < 1:
            errors.append(f"maxScaleUpStep must be >= 1, got {self.max_scale_up_step}")
        if self.scale_up_step not in ("proportional", "one"):
            errors.append(f"scaleUpStep must be 'proportional' or 'one', got {self.scale_up_step!r}")
        for key, value in (("scaleUpThreshold", self.scale_up_threshold), ("scaleDownBoundary", self.scale_down_boundary)):
            if not 0.0 < value <= 1.0:
                errors.append(f"{key} must be in (0, 1], got {value}")
        if self.scale_up_threshold <= self.scale_down_boundary:
            errors.append(
                f"scaleUpThreshold ({self.scale_up_threshold}) must be greater than scaleDownBoundary "
                f"({self.scale_down_boundary})"
            )
        for key, value in (("targetTTFT", self.target_ttft_ms), ("targetITL", self.target_itl_ms)):
            if not value > 0.0:
                errors.append(f"{key} must be > 0 (milliseconds), got {value}")
        if self.analyzer not in ANALYZERS:
            errors.append(f"analyzer must be one of {', '.join(ANALYZERS)}, got {self.analyzer!r}")
        if self.scale_down_step not in ("proportional", "one"):
            errors.append(f"scaleDownStep must be 'one' or 'proportional', got {self.scale_down_step!r}")
        if self.kv_cache_threshold < self.kv_spare_trigger:
            errors.append(
                f"kvCacheThreshold ({self.kv_cache_threshold}) must be >= kvSpareTrigger ({self.kv_spare_trigger})"
            )
        if self.queue_length_threshold < self.queue_spare_trigger:
            errors.append(
                f"queueLengthThreshold ({self.queue_length_threshold}) must be >= "
                f"queueSpareTrigger ({self.queue_spare_trigger})"
            )
        return errors


DEFAULT_CONFIG: Final = ScalingConfig()

# YAML key -> dataclass field, for the numeric settings.
_FLOAT_KEYS: Final[Mapping[str, str]] = {
    "kvCacheThreshold": "kv_cache_threshold",
    "queueLengthThreshold": "queue_length_threshold",
    "kvSpareTrigger": "kv_spare_trigger",
    "queueSpareTrigger": "queue_spare_trigger",
    "scaleDownStabilizationSeconds": "scale_down_stabilization_seconds",
    "staleAfterSeconds": "stale_after_seconds",
    "scaleUpThreshold": "scale_up_threshold",
    "scaleDownBoundary": "scale_down_boundary",
    "targetTTFT": "target_ttft_ms",
    "targetITL": "target_itl_ms",
}
_SELECTOR_KEYS: Final = frozenset({"model_id", "namespace"})
# WVA settings of analyzers wva does not implement yet: accepted so WVA ConfigMaps apply unchanged.
_WVA_IGNORED_KEYS: Final = frozenset(
    {
        "enableLimiter",
        "analyzerName",
        "priority",
        "smoothingAlpha",
        "ttftSLOMs",
        "tpotSLOMs",
        "saturationCap",
        "holdScaleUpWhileWarming",
        "analyzers",
    }
)


def _number(where: str, key: str, value: object, errors: list[str]) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        errors.append(f"{where}: {key} must be a finite number, got {value!r}")
        return None
    return float(value)


def parse_config(
    data: Mapping[str, object],
    *,
    base: ScalingConfig = DEFAULT_CONFIG,
    where: str = DEFAULT_KEY,
    warnings: list[str] | None = None,
) -> ScalingConfig:
    """Overlay the keys present in ``data`` onto ``base`` and validate the result.

    Raises :class:`ScalingConfigError` naming every bad key (prefixed with ``where``). ``model_id`` and
    ``namespace`` (override selectors) are ignored here; unused WVA keys are appended to ``warnings``.
    """
    errors: list[str] = []
    changes: dict[str, object] = {}
    for key, value in data.items():
        if key in _FLOAT_KEYS:
            number = _number(where, key, value, errors)
            if number is not None:
                changes[_FLOAT_KEYS[key]] = number
        elif key == "maxScaleUpStep":
            if isinstance(value, bool) or not isinstance(value, int):
                errors.append(f"{where}: maxScaleUpStep must be an integer, got {value!r}")
            else:
                changes["max_scale_up_step"] = value
        elif key in ("scaleUpStep", "scaleDownStep"):
            if value not in ("proportional", "one"):
                errors.append(f"{where}: {key} must be 'proportional' or 'one', got {value!r}")
            else:
                changes["scale_up_step" if key == "scaleUpStep" else "scale_down_step"] = value
        elif key == "analyzer":
            if value not in ANALYZERS:
                errors.append(f"{where}: analyzer must be one of {', '.join(ANALYZERS)}, got {value!r}")
            else:
                changes["analyzer"] = value
        elif key == "scaleToZero":
            stz = _parse_scale_to_zero(where, value, base.scale_to_zero, errors)
            if stz is not None:
                changes["scale_to_zero"] = stz
        elif key in _SELECTOR_KEYS:
            continue
        elif key in _WVA_IGNORED_KEYS:
            if warnings is not None:
                warnings.append(f"{where}: {key} is a WVA setting wva does not use; ignored")
        else:
            errors.append(f"{where}: unknown key {key!r}")
    if errors:
        raise ScalingConfigError(errors)
    config = replace(base, **changes)  # type: ignore[arg-type]  # keys checked above
    problems = config.validate()
    if problems:
        raise ScalingConfigError([f"{where}: {p}" for p in problems])
    return config


def _parse_scale_to_zero(
    where: str, value: object, base: ScaleToZeroConfig, errors: list[str]
) -> ScaleToZeroConfig | None:
    if not isinstance(value, Mapping):
        errors.append(f"{where}: scaleToZero must be a mapping, got {value!r}")
        return None
    enabled, retention = base.enabled, base.retention_seconds
    for key, item in value.items():
        if key == "enabled":
            if not isinstance(item, bool):
                errors.append(f"{where}: scaleToZero.enabled must be true or false, got {item!r}")
            else:
                enabled = item
        elif key == "retentionSeconds":
            number = _number(where, "scaleToZero.retentionSeconds", item, errors)
            if number is not None:
                retention = number
        else:
            errors.append(f"{where}: unknown key 'scaleToZero.{key}'")
    return ScaleToZeroConfig(enabled=enabled, retention_seconds=retention)


@dataclass(frozen=True, slots=True)
class ConfigSet:
    """The configuration in force: a default plus fully merged overrides, resolved by dict lookups."""

    default: ScalingConfig = DEFAULT_CONFIG
    by_model_namespace: Mapping[tuple[str, str], ScalingConfig] = field(default_factory=dict)
    by_model: Mapping[str, ScalingConfig] = field(default_factory=dict)
    by_namespace: Mapping[str, ScalingConfig] = field(default_factory=dict)

    def resolve(self, namespace: str, model_id: str) -> ScalingConfig:
        if self.by_model_namespace:
            found = self.by_model_namespace.get((model_id, namespace))
            if found is not None:
                return found
        if self.by_model:
            found = self.by_model.get(model_id)
            if found is not None:
                return found
        if self.by_namespace:
            found = self.by_namespace.get(namespace)
            if found is not None:
                return found
        return self.default


def _load_yaml(key: str, text: str, errors: list[str]) -> Mapping[str, object] | None:
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        errors.append(f"{key}: not valid YAML: {exc}")
        return None
    if loaded is None:
        return {}
    if not isinstance(loaded, Mapping) or not all(isinstance(k, str) for k in loaded):
        errors.append(f"{key}: must be a YAML mapping of settings, got {type(loaded).__name__}")
        return None
    return loaded


def _selector(key: str, data: Mapping[str, object], errors: list[str]) -> tuple[str, str] | None:
    model, namespace = data.get("model_id"), data.get("namespace")
    if model is None and namespace is None and "#" in key:
        model, _, namespace = key.rpartition("#")
    model = "" if model is None else model
    namespace = "" if namespace is None else namespace
    if not isinstance(model, str) or not isinstance(namespace, str):
        errors.append(f"{key}: model_id and namespace must be strings")
        return None
    if not model and not namespace:
        errors.append(f"{key}: an override must name a model_id and/or a namespace (or use the key 'model#namespace')")
        return None
    return model, namespace


def parse_configmap(
    data: Mapping[str, str], *, base: ScalingConfig = DEFAULT_CONFIG, warnings: list[str] | None = None
) -> ConfigSet:
    """Parse the ConfigMap's ``data`` on top of ``base`` (the service's settings); raises
    :class:`ScalingConfigError` listing every problem found."""
    errors: list[str] = []
    default = base
    if DEFAULT_KEY in data:
        loaded = _load_yaml(DEFAULT_KEY, data[DEFAULT_KEY], errors)
        if loaded is not None:
            try:
                default = parse_config(loaded, base=base, warnings=warnings)
            except ScalingConfigError as exc:
                errors.extend(exc.errors)
    by_pair: dict[tuple[str, str], ScalingConfig] = {}
    by_model: dict[str, ScalingConfig] = {}
    by_namespace: dict[str, ScalingConfig] = {}
    seen: dict[tuple[str, str], str] = {}
    for key in sorted(data):
        if key == DEFAULT_KEY:
            continue
        loaded = _load_yaml(key, data[key], errors)
        if loaded is None:
            continue
        selector = _selector(key, loaded, errors)
        if selector is None:
            continue
        if selector in seen:
            errors.append(f"{key}: same model_id/namespace as entry {seen[selector]!r}")
            continue
        seen[selector] = key
        try:
            config = parse_config(loaded, base=default, where=key, warnings=warnings)
        except ScalingConfigError as exc:
            errors.extend(exc.errors)
            continue
        model, namespace = selector
        if model and namespace:
            by_pair[selector] = config
        elif model:
            by_model[model] = config
        else:
            by_namespace[namespace] = config
    if errors:
        raise ScalingConfigError(errors)
    return ConfigSet(default=default, by_model_namespace=by_pair, by_model=by_model, by_namespace=by_namespace)


@dataclass(frozen=True, slots=True)
class ConfigUpdate:
    """Outcome of applying new ConfigMap data: ``configs`` is what is in force afterwards."""

    configs: ConfigSet
    applied: bool
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def apply_configmap(
    current: ConfigSet, data: Mapping[str, str] | None, *, base: ScalingConfig = DEFAULT_CONFIG
) -> ConfigUpdate:
    """Parse new ConfigMap data; on any error the ``current`` ConfigSet stays in force.

    ``data=None`` (the ConfigMap was deleted) returns to ``base`` (the service's settings).
    """
    if data is None:
        return ConfigUpdate(configs=ConfigSet(default=base), applied=True)
    warnings: list[str] = []
    try:
        configs = parse_configmap(data, base=base, warnings=warnings)
    except ScalingConfigError as exc:
        return ConfigUpdate(configs=current, applied=False, errors=exc.errors, warnings=tuple(warnings))
    return ConfigUpdate(configs=configs, applied=True, warnings=tuple(warnings))
