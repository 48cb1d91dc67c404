"""Scaler settings (``WVA_…`` / flags), and the base scaling configuration they give."""

from __future__ import annotations

import dataclasses

from services.scaler.scaling_config import ScaleToZeroConfig, ScalingConfig
from shared.settings import (
    Settings,
    SettingsError,
    choice,
    csv,
    duration,
    optional_path,
    optional_str,
    positive_int,
    setting,
)

MODES = ("scale", "hpa", "dry-run")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScalerSettings(Settings):
    scaler_mode: str = setting(
        "WVA_SCALER_MODE", "scale", choice(*MODES), "scale: patch deployments/scale; hpa: export gauges only; dry-run"
    )
    reconcile_interval: float = setting(
        "WVA_RECONCILE_INTERVAL", 30.0, duration, "periodic re-evaluation (staleness, stabilization)"
    )
    fetch_interval: float = setting(
        "WVA_FETCH_INTERVAL", 15.0, duration, "the fetcher's interval; staleness defaults to 3x this"
    )
    stale_after: float | None = setting(
        "WVA_STALE_AFTER", None, duration, "a snapshot older than this is not acted on (default 3x fetch interval)"
    )
    scale_down_stabilization: float = setting(
        "WVA_SCALE_DOWN_STABILIZATION", 120.0, duration, "scale down only after being safe this long"
    )
    scale_up_step: str = setting(
        "WVA_SCALE_UP_STEP", "proportional", choice("proportional", "one"), "replicas added per scale-up"
    )
    max_scale_up_step: int = setting("WVA_MAX_SCALE_UP_STEP", 4, positive_int, "cap of a proportional step")
    config_namespace: str = setting(
        "WVA_CONFIG_NAMESPACE", "wva-system", str, "namespace of the saturation-scaling-config ConfigMap"
    )
    config_map_name: str = setting(
        "WVA_CONFIG_MAP_NAME", "saturation-scaling-config", str, "name of the saturation ConfigMap"
    )
    saturation_config: str | None = setting(
        "WVA_SATURATION_CONFIG", None, optional_path, "YAML file to use instead of the ConfigMap"
    )
    fetch_request_timeout: float = setting(
        "WVA_FETCH_REQUEST_TIMEOUT", 2.0, duration, "how long a nudge waits for the fetcher to answer"
    )
    actuation_budget: float = setting(
        "WVA_ACTUATION_BUDGET", 20.0, duration, "longest one scale step may take, retries included, before it fails"
    )
    kubeconfig: str | None = setting("KUBECONFIG", None, optional_path, "kubeconfig (default: in-cluster)")
    # The same two settings as the watcher's: the scaler reads the VAs it may act on from the API.
    watch_namespaces: tuple[str, ...] = setting(
        "WVA_WATCH_NAMESPACES", (), csv, "namespaces whose VAs may be actuated, comma-separated (empty: all)"
    )
    controller_instance: str | None = setting(
        "WVA_CONTROLLER_INSTANCE",
        None,
        optional_str,
        "act only on VAs labelled wva.llmd.ai/controller-instance=<this> (unset: only VAs without the label)",
    )

    def validate(self) -> None:
        super().validate()
        if self.reconcile_interval <= 0:
            raise SettingsError(f"WVA_RECONCILE_INTERVAL={self.reconcile_interval:g}s: must be > 0")
        if self.actuation_budget <= 0:
            raise SettingsError(f"WVA_ACTUATION_BUDGET={self.actuation_budget:g}s: must be > 0")
        if self.stale_after is not None and self.stale_after <= 0:
            raise SettingsError(f"WVA_STALE_AFTER={self.stale_after:g}s: must be > 0")
        self.scaling_base()  # the thresholds these settings give must be valid too

    def scaling_base(self) -> ScalingConfig:
        """The configuration in force where the ConfigMap does not say otherwise."""
        stale = self.stale_after if self.stale_after is not None else 3 * self.fetch_interval
        base = ScalingConfig(
            scale_up_step="one" if self.scale_up_step == "one" else "proportional",
            max_scale_up_step=self.max_scale_up_step,
            scale_down_stabilization_seconds=self.scale_down_stabilization,
            stale_after_seconds=stale,
            scale_to_zero=ScaleToZeroConfig(),
        )
        errors = base.validate()
        if errors:
            raise SettingsError("; ".join(errors))
        return base
