"""Direct scraping: the text format parsed, and rates from successive scrapes."""

from __future__ import annotations

import pytest

from services.fetcher import scrape
from services.fetcher.collector import pod_key
from services.fetcher.promql import DEFAULT_ITL_METRIC

TEXT = """\
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{model_name="m"} 0.25
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="m"} 3.0
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m"} 7.0
# TYPE vllm:request_success counter
vllm:request_success_total{model_name="m"} 100.0
vllm:request_success_total{model_name="lora-1"} 20.0
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="m"} 120.0
vllm:time_to_first_token_seconds_sum{model_name="m"} 12.0
vllm:time_to_first_token_seconds_count{model_name="m"} 120.0
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",model_name="m",num_gpu_blocks="2048"} 1.0
"""


def test_parse_reads_gauges_counters_and_cache_config() -> None:
    sample, totals = scrape.parse(TEXT, itl_metric=DEFAULT_ITL_METRIC)
    assert (sample.kv_cache_usage, sample.waiting, sample.running) == (0.25, 3.0, 7.0)
    assert (sample.num_gpu_blocks, sample.block_size) == (2048, 16)
    assert totals["request_rate"] == 120.0  # both model_name series of the pod
    assert totals["ttft_sum_rate"] == 12.0 and totals["ttft_count_rate"] == 120.0


def test_rates_need_two_scrapes_and_survive_a_restart() -> None:
    rates = scrape.RateTracker(window=60)
    key = pod_key("ns", "p")
    assert rates.observe(key, 0.0, {"request_rate": 100.0})["request_rate"] is None
    assert rates.observe(key, 10.0, {"request_rate": 150.0})["request_rate"] == pytest.approx(5.0)
    # The server restarted: 150 -> 30 means 30 new requests, not -120.
    assert rates.observe(key, 20.0, {"request_rate": 30.0})["request_rate"] == pytest.approx((50 + 30) / 20)


def test_rates_cover_at_most_the_window() -> None:
    rates = scrape.RateTracker(window=30)
    key = pod_key("ns", "p")
    for t, v in [(0, 0), (15, 1000), (30, 1010), (45, 1020), (60, 1030)]:
        last = rates.observe(key, float(t), {"request_rate": float(v)})
    # The burst at t=15 is out of the window by t=60: (1030 - 1010) / 30.
    assert last["request_rate"] == pytest.approx(20 / 30)
