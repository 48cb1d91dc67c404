"""PromQL builders: pure functions from "what to read" to query text (no I/O, unit-tested).

Every label value is escaped: string literals get ``\\`` and ``"`` escaped; regex matchers first escape
RE2 metacharacters, so a model ID or name can never change the meaning of a query.

Batched mode reads one series set per metric for every tracked VA at once, restricted to the tracked
namespaces and grouped ``by (namespace, model_name, pod)``; the caller splits the result per VA using
the targets' pod lists. Per-VA mode restricts the same queries to one VA's pods.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

GROUP: Final = "namespace, model_name, pod"
DEFAULT_ITL_METRIC: Final = "vllm:inter_token_latency_seconds"
LEGACY_ITL_METRIC: Final = "vllm:time_per_output_token_seconds"
# The inference gateway's flow-control queue per model (Gateway API Inference Extension).
GATEWAY_QUEUE_METRIC: Final = "inference_extension_flow_control_queue_size"
GATEWAY_MODEL_LABEL: Final = "target_model_name"

_RE2_META: Final = frozenset("\\.+*?()|[]{}^$")

QueryKind = Literal["gauge", "rate", "info"]


def escape_string(value: str) -> str:
    """Escape a value for a double-quoted PromQL string literal."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_regex(value: str) -> str:
    """Escape a value so that a regex matcher matches it literally (RE2 syntax)."""
    return "".join("\\" + c if c in _RE2_META else c for c in value)


def any_of(values: Iterable[str]) -> str:
    """The right-hand side of ``=~`` matching exactly these values (sorted, deduplicated)."""
    return escape_string("|".join(escape_regex(v) for v in sorted(set(values))))


def duration(seconds: float) -> str:
    """A PromQL range duration: ``60`` -> ``60s``, ``0.5`` -> ``500ms``."""
    if seconds <= 0:
        raise ValueError(f"rate window must be positive, got {seconds}")
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"


@dataclass(frozen=True, slots=True)
class Scope:
    """Which series to read: every pod of some namespaces (batched), or some pods of one namespace."""

    namespaces: tuple[str, ...]
    pods: tuple[str, ...] | None = None  # None: every pod of the namespaces

    def matchers(self) -> str:
        parts = []
        if len(self.namespaces) == 1:
            parts.append(f'namespace="{escape_string(self.namespaces[0])}"')
        else:
            parts.append(f'namespace=~"{any_of(self.namespaces)}"')
        if self.pods is not None:
            parts.append(f'pod=~"{any_of(self.pods)}"')
        return ",".join(parts)


def batched(namespaces: Iterable[str]) -> Scope:
    return Scope(namespaces=tuple(sorted(set(namespaces))))


def per_va(namespace: str, pods: Iterable[str]) -> Scope:
    return Scope(namespaces=(namespace,), pods=tuple(sorted(set(pods))))


@dataclass(frozen=True, slots=True)
class Query:
    field: str  # the PodSample field (or "cache_config" for the info metric)
    kind: QueryKind
    promql: str


def queries(scope: Scope, *, rate_window: float, itl_metric: str = DEFAULT_ITL_METRIC) -> list[Query]:
    """The queries of one collection: one per metric, whatever the number of VAs in scope."""
    m = scope.matchers()
    w = duration(rate_window)

    def gauge(field: str, metric: str, agg: str) -> Query:
        return Query(field, "gauge", f"{agg} by ({GROUP}) ({metric}{{{m}}})")

    def rate(field: str, series: str) -> Query:
        return Query(field, "rate", f"sum by ({GROUP}) (rate({series}{{{m}}}[{w}]))")

    return [
        gauge("kv_cache_usage", "vllm:kv_cache_usage_perc", "max"),
        gauge("waiting", "vllm:num_requests_waiting", "sum"),
        gauge("running", "vllm:num_requests_running", "sum"),
        rate("request_rate", "vllm:request_success_total"),
        rate("request_prompt_tokens_rate", "vllm:request_prompt_tokens_sum"),
        rate("request_generation_tokens_rate", "vllm:request_generation_tokens_sum"),
        rate("generation_tokens_rate", "vllm:generation_tokens_total"),
        rate("ttft_sum_rate", "vllm:time_to_first_token_seconds_sum"),
        rate("ttft_count_rate", "vllm:time_to_first_token_seconds_count"),
        rate("itl_sum_rate", f"{itl_metric}_sum"),
        rate("itl_count_rate", f"{itl_metric}_count"),
        Query(
            "cache_config",
            "info",
            f"max by ({GROUP}, num_gpu_blocks, block_size) (vllm:cache_config_info{{{m}}})",
        ),
    ]


def availability(*, model_id: str, namespace: str) -> str:
    """Does any pod of this model report the saturation gauge in this namespace?"""
    return (
        f'count(vllm:kv_cache_usage_perc{{namespace="{escape_string(namespace)}",'
        f'model_name="{escape_string(model_id)}"}})'
    )


def gateway_queue(metric: str = GATEWAY_QUEUE_METRIC) -> str:
    """Requests waiting at the gateway, per model: one query whatever the number of VAs or models."""
    return f"sum by ({GATEWAY_MODEL_LABEL}) ({metric})"
