"""An emulated vLLM server's /metrics is Prometheus text with vLLM's names, and tells the model's state."""

from __future__ import annotations

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.sandbox import queueing, vllm

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


async def test_metrics_parse_with_vllm_names_types_and_values() -> None:
    now = [0.0]
    params = queueing.ServerParams(
        max_num_seqs=2,
        kv_cache_tokens=1600,
        block_size=16,
        prefill_seconds_per_token=0.0,
        decode_base_seconds=0.01,
        decode_seconds_per_seq=0.0,
    )
    server = vllm.EmulatedServer(model_id=MODEL, params=params, clock=lambda: now[0])
    port = await server.start()
    try:
        for _ in range(4):
            assert server.submit(input_tokens=100, output_tokens=60)  # 10 blocks each
        now[0] = 0.5  # first two finish at 0.6 s: two running, two waiting
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as resp,
        ):
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = await resp.text()
        now[0] = 10.0
        finished = server.metrics_text().decode()
    finally:
        await server.stop()

    for line in [
        'vllm:num_requests_running{model_name="meta-llama/Llama-3.1-8B-Instruct"} 2.0',
        'vllm:num_requests_waiting{model_name="meta-llama/Llama-3.1-8B-Instruct"} 2.0',
        'vllm:kv_cache_usage_perc{model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.2',
        'vllm:request_success_total{model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.0',
        'vllm:prompt_tokens_total{model_name="meta-llama/Llama-3.1-8B-Instruct"} 200.0',
    ]:
        assert line in text.splitlines()

    families = {f.name: f for f in text_string_to_metric_families(finished)}
    expected_types = {
        "vllm:kv_cache_usage_perc": "gauge",
        "vllm:num_requests_waiting": "gauge",
        "vllm:num_requests_running": "gauge",
        "vllm:request_success": "counter",
        "vllm:prompt_tokens": "counter",
        "vllm:generation_tokens": "counter",
        "vllm:time_to_first_token_seconds": "histogram",
        "vllm:inter_token_latency_seconds": "histogram",
        "vllm:e2e_request_latency_seconds": "histogram",
        "vllm:request_prompt_tokens": "histogram",
        "vllm:request_generation_tokens": "histogram",
        "vllm:cache_config_info": "gauge",
    }
    assert {name: families[name].type for name in expected_types} == expected_types

    def value(sample_name: str, family: str, **labels: str) -> float:
        for s in families[family].samples:
            if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items()):
                assert s.labels["model_name"] == MODEL
                return float(s.value)
        raise AssertionError(f"no sample {sample_name} {labels}")

    assert value("vllm:request_success_total", "vllm:request_success") == 4
    assert value("vllm:prompt_tokens_total", "vllm:prompt_tokens") == 400
    assert value("vllm:generation_tokens_total", "vllm:generation_tokens") == 240
    assert value("vllm:num_requests_running", "vllm:num_requests_running") == 0
    assert value("vllm:kv_cache_usage_perc", "vllm:kv_cache_usage_perc") == 0
    assert value("vllm:e2e_request_latency_seconds_count", "vllm:e2e_request_latency_seconds") == 4
    # 60 iterations of 10 ms each. #1 starts at 0 alone (an iteration's members are fixed when it
    # starts), #2 joins at 0.01; #3 and #4 take their slots when #1 and #2 finish at 0.6 and 0.61.
    assert value("vllm:e2e_request_latency_seconds_sum", "vllm:e2e_request_latency_seconds") == pytest.approx(
        0.6 + 0.61 + 1.2 + 1.21
    )
    assert value("vllm:e2e_request_latency_seconds_bucket", "vllm:e2e_request_latency_seconds", le="1.0") == 2
    assert value("vllm:inter_token_latency_seconds_count", "vllm:inter_token_latency_seconds") == 4 * 59
    assert value("vllm:time_to_first_token_seconds_count", "vllm:time_to_first_token_seconds") == 4
    assert value("vllm:request_prompt_tokens_sum", "vllm:request_prompt_tokens") == 400
    assert (
        value("vllm:cache_config_info", "vllm:cache_config_info", num_gpu_blocks="100", block_size="16") == 1
    )
