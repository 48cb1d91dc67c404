"""The event-skipping replica model gives exactly what the one-iteration-per-step model gave.

`queueing.Replica` skips ahead over iterations in which nothing but token generation happens; the
reference (`reference_replica.ReferenceReplica`, the model before that rewrite) runs every iteration.
On seeded random workloads — bursts, idle gaps, requests that do not fit, one-token answers, small
caches and few batch slots — both must agree bit for bit: state whenever someone looks, every
completion (TTFT, e2e, finish time, order) and every exported counter and histogram (sums included).
"""

from __future__ import annotations

import random

import pytest

from bench.reference_replica import ReferenceReplica
from services.sandbox import queueing


def _params(rng: random.Random) -> queueing.ServerParams:
    block = rng.choice([1, 8, 16])
    return queueing.ServerParams(
        max_num_seqs=rng.choice([1, 2, 4, 16, 64, 256]),
        kv_cache_tokens=block * rng.randint(40, 4000),
        block_size=block,
        prefill_seconds_per_token=rng.choice([0.0, 1e-5, 2e-5, 3.3e-4]),
        decode_base_seconds=rng.choice([0.0, 0.006, 0.0129, 0.05]),
        decode_seconds_per_seq=rng.choice([0.0001, 0.00025, 0.0006, 0.003]),
    )


def _workload(rng: random.Random, n: int) -> list[tuple[float, int, int]]:
    """(arrival, input, output): bursts, idle gaps, some requests too large for any cache."""
    t = 0.0
    out = []
    for _ in range(n):
        t += rng.choice([0.0, 0.0, rng.expovariate(20.0), rng.expovariate(2.0), rng.uniform(0, 30)])
        out.append((t, rng.choice([1, rng.randint(1, 600), rng.randint(1, 5000)]),
                    rng.choice([1, 2, rng.randint(1, 300)])))  # fmt: skip
    return out


def _state(r: queueing.Replica | ReferenceReplica) -> tuple[float, int, int, float]:
    return (r.now, r.num_waiting, r.num_running, r.kv_cache_usage)


def _stats(r: queueing.Replica | ReferenceReplica) -> tuple[object, ...]:
    s = r.stats
    hists = (s.ttft, s.itl, s.e2e, s.request_prompt_tokens, s.request_generation_tokens)
    return (
        s.requests_arrived, s.requests_succeeded, s.requests_rejected, s.prompt_tokens, s.generation_tokens,
        *[(h.counts, h.sum, h.count) for h in hists],
    )  # fmt: skip


def _completions(r: queueing.Replica | ReferenceReplica) -> list[tuple[int, float, float, float]]:
    return [(c.request.id, c.ttft, c.e2e, c.finished) for c in r.completions]


@pytest.mark.parametrize("seed", range(40))
def test_fast_model_matches_the_per_iteration_model_exactly(seed: int) -> None:
    rng = random.Random(seed)
    params = _params(rng)
    fast, slow = queueing.Replica(params), ReferenceReplica(params)
    looks = 0
    for i, (arrival, prompt, output) in enumerate(_workload(rng, 300)):
        # Someone looks in between (a scrape, the router), at random moments before the arrival.
        for _ in range(rng.choice([0, 0, 1, 3])):
            at = rng.uniform(fast.now, arrival)
            fast.advance(at)
            slow.advance(at)
            assert _state(fast) == _state(slow)
            looks += 1
        request = queueing.Request(arrival=arrival, input_tokens=prompt, output_tokens=output, id=i)
        assert fast.submit(request) == slow.submit(request)
        assert _state(fast) == _state(slow)
    end = fast.now + 10_000.0
    fast.advance(end)
    slow.advance(end)
    assert _state(fast) == _state(slow)
    assert _completions(fast) == _completions(slow)
    assert _stats(fast) == _stats(slow)
    assert len(fast.completions) > 0 and looks > 0


def test_in_flight_lists_what_a_deleted_pod_would_lose() -> None:
    replica = queueing.Replica(queueing.ServerParams(max_num_seqs=2))
    for i in range(4):
        replica.submit(queueing.Request(arrival=0.0, input_tokens=10, output_tokens=50, id=i))
    replica.advance(0.1)
    assert (replica.num_running, replica.num_waiting) == (2, 2)
    assert sorted(r.id for r in replica.in_flight()) == [0, 1, 2, 3]
    replica.advance(1000.0)
    assert replica.in_flight() == []
