"""From per-pod samples to a VA's snapshot: membership, averages, status, dropped values."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from services.fetcher.collector import PodSample, assemble, pod_key
from shared.messages import PodRef, Target

AT = datetime(2026, 1, 1, tzinfo=UTC)


def target(*pods: str) -> Target:
    return Target(
        namespace="ns", name="va", at=AT, model_id="m", deployment_generation=3,
        pods=tuple(PodRef(name=p, ready=True) for p in pods),
    )


def busy(kv: float, *, req: float, prompt: float, gen: float, ttft: tuple[float, float], itl: tuple[float, float]) -> PodSample:
    return PodSample(
        kv_cache_usage=kv, waiting=1, running=4, request_rate=req, request_prompt_tokens_rate=prompt,
        request_generation_tokens_rate=gen, generation_tokens_rate=gen, ttft_sum_rate=ttft[0], ttft_count_rate=ttft[1],
        itl_sum_rate=itl[0], itl_count_rate=itl[1], num_gpu_blocks=1024, block_size=16,
    )


def test_two_pods_worked_example_and_a_foreign_pod_ignored() -> None:
    samples = {
        # pod a: 2 req/s, 1000 prompt tok/s, 200 gen tok/s; TTFT sum 0.4 s/s over 2 req/s -> 0.2 s
        pod_key("ns", "a"): busy(0.5, req=2, prompt=1000, gen=200, ttft=(0.4, 2), itl=(4.0, 200)),
        # pod b: 6 req/s, 1800 prompt tok/s, 600 gen tok/s; TTFT 0.6 s/s over 6 req/s
        pod_key("ns", "b"): busy(0.9, req=6, prompt=1800, gen=600, ttft=(0.6, 6), itl=(12.0, 600)),
        # a deleted pod still in Prometheus: must not count
        pod_key("ns", "gone"): busy(1.0, req=100, prompt=1, gen=1, ttft=(100, 1), itl=(1, 1)),
        # the same pod name in another namespace: not ours either
        pod_key("other", "a"): busy(1.0, req=100, prompt=1, gen=1, ttft=(100, 1), itl=(1, 1)),
    }
    snap, dropped = assemble(target("a", "b"), samples, collected_at=AT)
    assert snap.status == "ok" and snap.reason == "" and dropped == {}
    assert [r.pod for r in snap.replicas] == ["a", "b"]
    assert [r.kv_cache_usage for r in snap.replicas] == [0.5, 0.9]
    assert snap.allocation.arrival_rate == 8.0
    assert snap.allocation.avg_input_tokens == 2800 / 8  # 350
    assert snap.allocation.avg_output_tokens == 800 / 8  # 100
    assert snap.allocation.ttft_seconds == 1.0 / 8  # traffic-weighted, not the mean of 0.2 and 0.1
    assert snap.allocation.itl_seconds == 16.0 / 800
    assert snap.deployment_generation == 3 and snap.collected_at == AT
    # Each pod's own load and latency, the SLO analyzer's points: 200 tok/s at 20 ms, 600 at 20 ms.
    assert [(r.generation_tokens_rate, r.itl_seconds) for r in snap.replicas] == [(200, 4.0 / 200), (600, 12.0 / 600)]


def test_request_lengths_are_those_of_finished_requests() -> None:
    # Pod a serves steadily: 2 finished req/s of 500 prompt and 100 output tokens. Pod b has just
    # started: it generates 400 tokens/s for requests still running and has finished none. The model's
    # request shape is a's; tokens generated over requests finished would say 300 output tokens, and the
    # SLO analyzer, dividing a replica's tokens/s by it, would take every replica for a third of itself.
    a = busy(0.5, req=2, prompt=1000, gen=200, ttft=(0.4, 2), itl=(4.0, 200))
    b = PodSample(
        kv_cache_usage=0.6, waiting=0, running=20, request_rate=0, request_prompt_tokens_rate=0,
        request_generation_tokens_rate=0, generation_tokens_rate=400, ttft_sum_rate=0.3, ttft_count_rate=3,
        itl_sum_rate=8.0, itl_count_rate=400, num_gpu_blocks=1024, block_size=16,
    )  # fmt: skip
    snap, _ = assemble(target("a", "b"), {pod_key("ns", "a"): a, pod_key("ns", "b"): b}, collected_at=AT)
    assert (snap.allocation.avg_input_tokens, snap.allocation.avg_output_tokens) == (500, 100)
    assert [r.generation_tokens_rate for r in snap.replicas] == [200, 400]  # each pod's load, all of it


def test_the_gateway_queue_is_the_models_and_a_bad_one_is_dropped() -> None:
    samples = {pod_key("ns", "a"): busy(0.5, req=2, prompt=1000, gen=200, ttft=(0.4, 2), itl=(4.0, 200))}
    snap, _ = assemble(target("a"), samples, collected_at=AT, gateway_queue=7.0)
    assert snap.allocation.gateway_queue == 7.0
    snap, dropped = assemble(target("a"), samples, collected_at=AT, gateway_queue=math.nan)
    assert snap.allocation.gateway_queue is None and dropped == {"gateway_queue": 1}
    # An idle pod generated nothing: no latency to learn from, not a zero latency.
    idle = busy(0.0, req=0, prompt=0, gen=0, ttft=(0, 0), itl=(0, 0))
    snap, _ = assemble(target("a"), {pod_key("ns", "a"): idle}, collected_at=AT)
    assert (snap.replicas[0].generation_tokens_rate, snap.replicas[0].itl_seconds) == (0, None)


def test_nan_inf_and_negative_values_are_dropped_and_counted() -> None:
    s = busy(math.nan, req=2, prompt=400, gen=40, ttft=(math.inf, 2), itl=(-1.0, 40))
    snap, dropped = assemble(target("a"), {pod_key("ns", "a"): s}, collected_at=AT)
    assert dropped == {"kv_cache_usage": 1, "ttft_sum_rate": 1, "itl_sum_rate": 1}
    assert snap.dropped_values == 3
    assert snap.replicas[0].kv_cache_usage is None
    assert snap.allocation.ttft_seconds == 0.0  # only the dropped sum is missing -> 0/2
    assert snap.status == "partial"  # a pod without its KV usage cannot be judged
    assert "dropped 3" in snap.reason
    assert snap.allocation.avg_input_tokens == 200.0


def test_a_pod_without_series_makes_the_snapshot_partial() -> None:
    samples = {pod_key("ns", "a"): busy(0.2, req=1, prompt=1, gen=1, ttft=(1, 1), itl=(1, 1))}
    snap, _ = assemble(target("a", "new"), samples, collected_at=AT)
    assert snap.status == "partial"
    assert "1 of 2 pods (new)" in snap.reason
    assert [r.pod for r in snap.replicas] == ["a"]


def test_idle_traffic_is_zero_not_missing() -> None:
    samples = {pod_key("ns", "a"): busy(0.0, req=0, prompt=0, gen=0, ttft=(0, 0), itl=(0, 0))}
    snap, _ = assemble(target("a"), samples, collected_at=AT)
    assert snap.status == "ok"
    assert snap.allocation.arrival_rate == 0.0
    assert snap.allocation.avg_input_tokens is None and snap.allocation.ttft_seconds is None


def test_no_pods_is_ok_and_says_so() -> None:
    snap, _ = assemble(target(), {}, collected_at=AT)
    assert snap.status == "ok" and snap.reason == "no pods" and snap.replicas == ()
