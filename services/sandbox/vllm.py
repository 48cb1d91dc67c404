"""An emulated vLLM server: the queueing model of one replica behind a real `/metrics` endpoint.

The replica model (queueing.py) is advanced lazily to "now" whenever someone looks — a request is
submitted, the router asks for the load, Prometheus scrapes — so nothing ticks in the background and an
idle server costs nothing. Metrics are read from the model at scrape time by a custom collector, with
the names and labels vLLM exports (`vllm:` prefix, `model_name` label); the scrape configuration adds
`namespace` and `pod`, as in a real cluster.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from services.sandbox import exposition, queueing
from services.sandbox import router as routing

Clock = Callable[[], float]


class _ReplicaCollector(Collector):
    def __init__(self, server: EmulatedServer) -> None:
        self._server = server

    def collect(self) -> Iterator[Metric]:
        server = self._server
        replica = server.replica
        replica.advance(server.now())
        model = [server.model_id]
        stats = replica.stats

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=["model_name"])
            family.add_metric(model, value)
            return family

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            # CounterMetricFamily appends `_total` itself, exactly as vLLM's names read.
            family = CounterMetricFamily(name, doc, labels=["model_name"])
            family.add_metric(model, value)
            return family

        def histogram(name: str, doc: str, h: queueing.Histogram) -> HistogramMetricFamily:
            family = HistogramMetricFamily(name, doc, labels=["model_name"])
            buckets = [("+Inf" if math.isinf(b) else repr(float(b)), float(c)) for b, c in h.cumulative()]
            family.add_metric(model, buckets=buckets, sum_value=h.sum)
            return family

        yield gauge(
            "vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", replica.kv_cache_usage
        )
        yield gauge(
            "vllm:num_requests_waiting", "Number of requests waiting to be processed.", replica.num_waiting
        )
        yield gauge(
            "vllm:num_requests_running", "Number of requests in model execution batches.", replica.num_running
        )
        yield counter(
            "vllm:request_success", "Count of successfully processed requests.", stats.requests_succeeded
        )
        yield counter("vllm:prompt_tokens", "Number of prefill tokens processed.", stats.prompt_tokens)
        yield counter(
            "vllm:generation_tokens", "Number of generation tokens processed.", stats.generation_tokens
        )
        yield histogram(
            "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", stats.ttft
        )
        yield histogram(
            "vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", stats.itl
        )
        yield histogram(
            "vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", stats.e2e
        )
        yield histogram(
            "vllm:request_prompt_tokens", "Number of prefill tokens processed.", stats.request_prompt_tokens
        )
        yield histogram(
            "vllm:request_generation_tokens",
            "Number of generation tokens processed.",
            stats.request_generation_tokens,
        )
        info = GaugeMetricFamily(
            "vllm:cache_config_info",
            "Information of the LLMEngine CacheConfig",
            labels=["block_size", "model_name", "num_gpu_blocks"],
        )
        params = replica.params
        info.add_metric([str(params.block_size), server.model_id, str(params.num_gpu_blocks)], 1.0)
        yield info


class EmulatedServer:
    """One emulated vLLM pod: `start()` serves `/metrics` on 127.0.0.1 and returns the port.

    `clock` gives seconds on any monotonic scale (default: the event loop's); the model's time is
    seconds since the server was created.
    """

    def __init__(self, *, model_id: str, params: queueing.ServerParams, clock: Clock | None = None) -> None:
        self.model_id = model_id
        self.replica = queueing.Replica(params)
        self._clock: Clock = clock or asyncio.get_running_loop().time
        self._epoch = self._clock()
        self._next_id = 0
        self._endpoint = exposition.serving(_ReplicaCollector(self))

    @property
    def port(self) -> int | None:
        return self._endpoint.port

    def now(self) -> float:
        return self._clock() - self._epoch

    # -- traffic (in-process: the router calls these; the queueing model is the "GPU")

    def submit(self, *, input_tokens: int, output_tokens: int) -> bool:
        """Accept a request arriving now; False if the server rejects it (larger than its KV cache)."""
        self._next_id += 1
        request = queueing.Request(
            arrival=max(self.now(), self.replica.now),
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            id=self._next_id,
        )
        return self.replica.submit(request) == "queued"

    def replica_load(self, key: str) -> routing.ReplicaLoad:
        """What a gateway knows of this replica now (its metrics), under `key`."""
        replica = self.replica
        replica.advance(self.now())
        return routing.ReplicaLoad(
            key=key,
            waiting=replica.num_waiting,
            running=replica.num_running,
            kv_cache_usage=replica.kv_cache_usage,
            max_num_seqs=replica.params.max_num_seqs,
        )

    def metrics_text(self) -> bytes:
        return self._endpoint.text()

    # -- HTTP

    async def start(self, *, host: str = "127.0.0.1", port: int = 0) -> int:
        return await self._endpoint.start(host=host, port=port)

    async def stop(self) -> None:
        await self._endpoint.stop()
