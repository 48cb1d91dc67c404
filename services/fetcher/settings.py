"""Fetcher settings (docs/design.md §4, §8): every one has a default, a ``WVA_…`` variable and a flag."""

from __future__ import annotations

import dataclasses
import os

from services.fetcher.promql import DEFAULT_ITL_METRIC, GATEWAY_QUEUE_METRIC
from shared.settings import (
    Settings,
    SettingsError,
    boolean,
    choice,
    duration,
    optional_path,
    positive_int,
    setting,
    url,
)

COLLECTORS = ("prometheus", "scrape")  # kept in step with factory.REGISTRY by a unit test


def _metric_name(text: str) -> str:
    import re

    if not re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        raise ValueError(f"invalid metric name {text!r}")
    return text


def _optional_url(text: str) -> str | None:
    return url("http", "https")(text) if text.strip() else None


def _token(text: str) -> str | None:
    from services.fetcher import credentials

    return credentials.clean_token(text) if text.strip() else None


@dataclasses.dataclass(frozen=True, kw_only=True)
class FetcherSettings(Settings):
    collector: str = setting("WVA_COLLECTOR", "prometheus", choice(*COLLECTORS), "metrics backend")
    prometheus_url: str = setting(
        "WVA_PROMETHEUS_URL", "http://127.0.0.1:9090", url("http", "https"), "Prometheus base URL"
    )
    prometheus_token: str | None = setting(
        "WVA_PROMETHEUS_TOKEN", None, _token, "bearer token for Prometheus (surrounding whitespace is stripped)",
        secret=True,
    )
    prometheus_token_file: str | None = setting(
        "WVA_PROMETHEUS_TOKEN_FILE", None, optional_path,
        "file holding the bearer token for Prometheus (a service-account token), re-read when it changes",
    )
    prometheus_ca: str | None = setting(
        "WVA_PROMETHEUS_CA", None, optional_path,
        "CA bundle to verify Prometheus's TLS certificate (default: the system's trust store)",
    )
    prometheus_insecure_skip_verify: bool = setting(
        "WVA_PROMETHEUS_INSECURE_SKIP_VERIFY", False, boolean,
        "do not verify Prometheus's TLS certificate (testing only)",
    )
    prometheus_timeout: float = setting("WVA_PROMETHEUS_TIMEOUT", 5.0, duration, "timeout of one query")
    scrape_max_bytes: int = setting(
        "WVA_SCRAPE_MAX_BYTES", 4 * 1024 * 1024, positive_int,
        "largest /metrics body read from a pod (scrape backend); a larger one is that pod's error",
    )
    prometheus_concurrency: int = setting(
        "WVA_PROMETHEUS_CONCURRENCY", 4, positive_int, "queries (or scrapes) in flight at once"
    )
    prometheus_compression: bool = setting(
        "WVA_PROMETHEUS_COMPRESSION", False, boolean,
        "ask Prometheus to gzip its answers: ~10x fewer bytes for ~25% more of its CPU (for a slow or metered link)",
    )
    query_mode: str = setting(
        "WVA_QUERY_MODE", "batched", choice("batched", "per-va"),
        "batched: one query per metric for all VAs; per-va: one set of queries per VA",
    )
    rate_window: float = setting("WVA_RATE_WINDOW", 60.0, duration, "window of rate() for counters")
    itl_metric: str = setting(
        "WVA_ITL_METRIC", DEFAULT_ITL_METRIC, _metric_name,
        "inter-token latency histogram (older vLLM: vllm:time_per_output_token_seconds)",
    )
    gateway_queue_metric: str = setting(
        "WVA_GATEWAY_QUEUE_METRIC", GATEWAY_QUEUE_METRIC, _metric_name,
        "the inference gateway's queue per model (a gauge labelled target_model_name)",
    )
    gateway_metrics_url: str | None = setting(
        "WVA_GATEWAY_METRICS_URL", None, _optional_url,
        "scrape backend: the inference gateway's metrics URL, read once per collection (empty: no gateway)",
    )
    fetch_budget: float = setting(
        "WVA_FETCH_BUDGET", 10.0, duration, "time allowed for one collection, retries included"
    )
    cache_enabled: bool = setting("WVA_CACHE_ENABLED", True, boolean, "cache snapshots for on-demand fetches")
    cache_ttl: float = setting("WVA_CACHE_TTL", 30.0, duration, "how long a snapshot is served from cache")
    cache_cleanup_interval: float = setting(
        "WVA_CACHE_CLEANUP_INTERVAL", 300.0, duration, "how often expired cache entries are removed"
    )
    fetch_interval: float = setting(
        "WVA_FETCH_INTERVAL", 15.0, duration, "background fetch period; 0 disables background fetching"
    )
    fetch_queue_group: str = setting(
        "WVA_FETCH_QUEUE_GROUP", "wva-fetcher", str, "NATS queue group shared by fetcher replicas"
    )

    def validate(self) -> None:
        super().validate()
        self._validate_prometheus_access()
        if self.cache_enabled and self.fetch_interval > 0 and self.cache_ttl < self.fetch_interval:
            raise SettingsError(
                f"WVA_CACHE_TTL ({self.cache_ttl:g}s) is shorter than WVA_FETCH_INTERVAL "
                f"({self.fetch_interval:g}s): cached snapshots would expire between background fetches; "
                "raise WVA_CACHE_TTL or lower WVA_FETCH_INTERVAL"
            )
        if self.cache_enabled and self.cache_ttl <= 0:
            raise SettingsError("WVA_CACHE_TTL must be positive when WVA_CACHE_ENABLED=true")
        if self.cache_cleanup_interval <= 0:
            raise SettingsError("WVA_CACHE_CLEANUP_INTERVAL must be positive")
        if self.rate_window <= 0:
            raise SettingsError("WVA_RATE_WINDOW must be positive")
        if self.prometheus_timeout <= 0 or self.fetch_budget <= 0:
            raise SettingsError("WVA_PROMETHEUS_TIMEOUT and WVA_FETCH_BUDGET must be positive")
        if self.gateway_metrics_url and self.collector != "scrape":
            raise SettingsError(
                "WVA_GATEWAY_METRICS_URL is read by the scrape backend only; with WVA_COLLECTOR="
                f"{self.collector} the gateway's queue comes from the backend (WVA_GATEWAY_QUEUE_METRIC)"
            )
        if not self.fetch_queue_group.strip() or any(c in self.fetch_queue_group for c in " .*>"):
            raise SettingsError(f"WVA_FETCH_QUEUE_GROUP={self.fetch_queue_group!r}: must be one plain token")

    def _validate_prometheus_access(self) -> None:
        from services.fetcher import credentials

        if self.prometheus_token and self.prometheus_token_file:
            raise SettingsError("WVA_PROMETHEUS_TOKEN and WVA_PROMETHEUS_TOKEN_FILE are both set: use one")
        if self.prometheus_token:
            try:
                credentials.clean_token(self.prometheus_token)
            except credentials.TokenError as exc:
                raise SettingsError(f"WVA_PROMETHEUS_TOKEN=***: {exc}") from None
        if self.prometheus_insecure_skip_verify and self.prometheus_ca:
            raise SettingsError(
                "WVA_PROMETHEUS_INSECURE_SKIP_VERIFY=true and WVA_PROMETHEUS_CA are both set: "
                "verify against the CA, or skip verification, not both"
            )
        if self.collector != "prometheus":
            return
        if self.prometheus_token_file:
            try:
                credentials.read_token(self.prometheus_token_file)
            except credentials.TokenFileError as exc:
                raise SettingsError(str(exc)) from None
        if self.prometheus_ca and not os.access(self.prometheus_ca, os.R_OK):
            raise SettingsError(f"WVA_PROMETHEUS_CA={self.prometheus_ca!r}: no readable CA bundle at this path")
