"""The replica model behaves like a server: flat below capacity, growing queues above, Little's law."""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass

import pytest

from services.sandbox import load, queueing

PARAMS = queueing.ServerParams()  # capacity ≈ 6.3 req/s for the lengths below (measured)
INPUT = queueing.LogNormal(median=512, sigma=0.5, min=16, max=4096)
OUTPUT = queueing.Uniform(min=64, max=192)


@dataclass
class Run:
    replica: queueing.Replica
    # (time, in system, waiting, kv usage) every 0.1 s of simulated time
    samples: list[tuple[float, int, int, float]]

    def window(self, start: float, end: float) -> list[tuple[float, int, int, float]]:
        return [s for s in self.samples if start <= s[0] < end]

    def completions(self, start: float, end: float) -> list[queueing.Completion]:
        return [c for c in self.replica.completions if start <= c.request.arrival < end]


def simulate(rps: float, *, duration: float, seed: int = 1, params: queueing.ServerParams = PARAMS) -> Run:
    replica = queueing.Replica(params)
    lengths = random.Random(seed + 1)
    samples: list[tuple[float, int, int, float]] = []
    next_sample = 0.0

    def sample_until(t: float) -> None:
        nonlocal next_sample
        while next_sample < t:
            replica.advance(next_sample)
            samples.append(
                (
                    next_sample,
                    replica.num_waiting + replica.num_running,
                    replica.num_waiting,
                    replica.kv_cache_usage,
                )
            )
            next_sample += 0.1

    for t in load.poisson_arrivals(load.Constant(rps=rps), seed=seed, end=duration):
        sample_until(t)
        replica.submit(
            queueing.Request(
                arrival=t, input_tokens=INPUT.sample(lengths), output_tokens=OUTPUT.sample(lengths)
            )
        )
    sample_until(duration)
    return Run(replica, samples)


def test_one_request_worked_numbers() -> None:
    params = queueing.ServerParams(
        prefill_seconds_per_token=0.001, decode_base_seconds=0.01, decode_seconds_per_seq=0.002
    )
    replica = queueing.Replica(params)
    replica.submit(queueing.Request(arrival=1.0, input_tokens=100, output_tokens=5))
    replica.advance(100.0)
    (done,) = replica.completions
    # first iteration: prefill 100 tokens (0.1 s) + one decode step (0.012 s); then 4 steps of 0.012 s
    assert done.ttft == pytest.approx(0.112)
    assert done.e2e == pytest.approx(0.112 + 4 * 0.012)
    stats = replica.stats
    assert (stats.requests_succeeded, stats.prompt_tokens, stats.generation_tokens) == (1, 100, 5)
    assert stats.itl.count == 4
    assert stats.itl.sum == pytest.approx(4 * 0.012)
    assert replica.num_running == 0
    assert replica.kv_cache_usage == 0


def test_admission_is_limited_by_slots_and_by_kv_cache() -> None:
    params = queueing.ServerParams(max_num_seqs=4, kv_cache_tokens=1600, block_size=16)  # 100 blocks
    replica = queueing.Replica(params)
    for i in range(6):  # 500 tokens each = 32 blocks: only 3 fit in 100 blocks, although 4 slots are free
        replica.submit(queueing.Request(arrival=0.0, input_tokens=400, output_tokens=100, id=i))
    # The first arrival starts an iteration alone (membership is fixed when it starts); the others are
    # admitted when it ends, a few tens of milliseconds later, and nobody finishes before 0.5 s.
    replica.advance(0.5)
    assert (replica.num_running, replica.num_waiting) == (3, 3)
    assert replica.kv_cache_usage == pytest.approx(96 / 100)

    small = queueing.Replica(params)
    for i in range(6):
        small.submit(queueing.Request(arrival=0.0, input_tokens=10, output_tokens=20, id=i))
    small.advance(0.1)
    assert (small.num_running, small.num_waiting) == (4, 2)  # slots bind now


def test_requests_are_served_first_come_first_served() -> None:
    replica = queueing.Replica(queueing.ServerParams(max_num_seqs=1))
    for i in range(5):
        replica.submit(queueing.Request(arrival=0.01 * i, input_tokens=10, output_tokens=3, id=i))
    replica.advance(60.0)
    assert [c.request.id for c in replica.completions] == [0, 1, 2, 3, 4]


def test_request_larger_than_the_cache_is_rejected_not_queued_forever() -> None:
    replica = queueing.Replica(queueing.ServerParams(kv_cache_tokens=256, block_size=16))
    outcome = replica.submit(queueing.Request(arrival=0.0, input_tokens=250, output_tokens=10))
    assert outcome == "rejected"
    assert replica.num_waiting == 0
    assert replica.stats.requests_rejected == 1


def test_time_cannot_go_backwards() -> None:
    replica = queueing.Replica(PARAMS)
    replica.advance(5.0)
    with pytest.raises(queueing.QueueingError):
        replica.submit(queueing.Request(arrival=4.0, input_tokens=10, output_tokens=10))


def test_below_capacity_queue_stays_near_zero_and_latency_is_flat() -> None:
    light, moderate = simulate(1.5, duration=300), simulate(3.5, duration=300)
    for run in (light, moderate):
        steady = run.window(30, 300)
        assert statistics.mean(s[2] for s in steady) < 0.2  # hardly anything waits
        assert statistics.mean(s[3] for s in steady) < 0.5
    ttft_light = statistics.median(c.ttft for c in light.completions(30, 280))
    ttft_moderate = statistics.median(c.ttft for c in moderate.completions(30, 280))
    e2e_light = statistics.median(c.e2e for c in light.completions(30, 280))
    e2e_moderate = statistics.median(c.e2e for c in moderate.completions(30, 280))
    # more than twice the traffic costs well under 2x latency: the batch absorbs it
    assert ttft_moderate < 1.5 * ttft_light
    assert e2e_moderate < 1.5 * e2e_light
    assert ttft_moderate < 0.1


def test_above_capacity_queue_and_ttft_grow() -> None:
    run = simulate(9.0, duration=240)  # ~1.4x capacity
    first, second = run.window(60, 150), run.window(150, 240)
    waiting_first = statistics.mean(s[2] for s in first)
    waiting_second = statistics.mean(s[2] for s in second)
    assert waiting_first > 20
    assert waiting_second > 1.5 * waiting_first  # the queue keeps growing: unstable
    ttft_early = statistics.median(c.ttft for c in run.completions(60, 100))
    ttft_late = statistics.median(c.ttft for c in run.completions(160, 200))
    assert ttft_early > 1.0
    assert ttft_late > 2 * ttft_early
    assert statistics.mean(s[3] for s in second) > 0.9  # KV cache is the binding constraint


@pytest.mark.parametrize("rps", [2.0, 4.0, 5.5])
def test_littles_law_holds(rps: float) -> None:
    run = simulate(rps, duration=600, seed=7)
    start, end = 60.0, 540.0
    in_system = statistics.mean(s[1] for s in run.window(start, end))  # time-average number in system
    completions = run.completions(start, end)
    lam = len(completions) / (end - start)
    W = statistics.mean(c.e2e for c in completions)
    assert lam == pytest.approx(rps, rel=0.1)  # the Poisson source delivers the asked rate
    assert in_system == pytest.approx(lam * W, rel=0.05)  # L = λW


def test_same_seed_same_run() -> None:
    a, b = simulate(5.0, duration=60, seed=3), simulate(5.0, duration=60, seed=3)
    assert [c.e2e for c in a.replica.completions] == [c.e2e for c in b.replica.completions]
    c = simulate(5.0, duration=60, seed=4)
    assert [x.e2e for x in c.replica.completions] != [x.e2e for x in a.replica.completions]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"max_num_seqs": 0}, "max_num_seqs"),
        ({"kv_cache_tokens": 8, "block_size": 16}, "kv_cache_tokens"),
        ({"decode_base_seconds": 0.0, "decode_seconds_per_seq": 0.0}, "must be > 0"),
    ],
)
def test_invalid_parameters_are_refused(bad: dict[str, int | float], message: str) -> None:
    with pytest.raises(queueing.QueueingError, match=message):
        queueing.ServerParams(**bad)  # type: ignore[arg-type]


def test_histogram_counts_weighted_observations_cumulatively() -> None:
    h = queueing.Histogram((0.1, 1.0))
    h.observe(0.05, 3)
    h.observe(0.5)
    h.observe(5.0, 2)
    assert h.cumulative()[0] == (0.1, 3)
    assert h.cumulative()[1] == (1.0, 4)
    assert h.cumulative()[2][1] == 6
    assert h.count == 6
    assert h.sum == pytest.approx(0.15 + 0.5 + 10.0)
