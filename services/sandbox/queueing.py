"""The queueing model of one emulated vLLM replica: pure, deterministic, driven by explicit time.

vLLM's engine runs in *iterations*: each one admits waiting requests (FIFO, head-of-line blocking,
as vLLM's FCFS scheduler does) while a batch slot is free and the KV cache has room, prefills the
newly admitted prompts, and produces one token for every running request. The model reproduces that
loop with a cost model instead of a GPU:

    iteration time = prefill_seconds_per_token * (prompt tokens admitted this iteration)
                   + decode_base_seconds + decode_seconds_per_seq * (running requests)

so the step slows down as the batch grows, which is what makes a real server saturate. A request
reserves KV blocks for its whole prompt and output at admission (so it is never preempted); KV usage
is reserved blocks / total blocks. TTFT is arrival -> end of the iteration that prefilled it, ITL is
the time between successive tokens, e2e is arrival -> last token.

Nothing here reads a clock: the caller passes time in (`advance`, `submit`), so tests run hours of
simulated traffic in milliseconds and the server (vllm.py) drives it with the event loop's clock.

Exceptions::

    ValueError
    └── QueueingError       a request or parameters the model cannot serve (e.g. larger than the cache)
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Final, Literal

import msgspec


class QueueingError(ValueError):
    """A request or configuration the replica model cannot serve."""


class ServerParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Per-variant server parameters (a scenario's `server:` block).

    Defaults describe a small GPU: about 10 requests/s of 512-in/128-out traffic per replica.
    """

    max_num_seqs: int = 32
    kv_cache_tokens: int = 16384
    block_size: int = 16
    prefill_seconds_per_token: float = 0.00002
    decode_base_seconds: float = 0.012
    decode_seconds_per_seq: float = 0.0006

    def __post_init__(self) -> None:
        if self.max_num_seqs < 1:
            raise QueueingError(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
        if self.block_size < 1:
            raise QueueingError(f"block_size must be >= 1, got {self.block_size}")
        if self.kv_cache_tokens < self.block_size:
            raise QueueingError(
                f"kv_cache_tokens ({self.kv_cache_tokens}) must hold at least one block of {self.block_size}"
            )
        for name in ("prefill_seconds_per_token", "decode_base_seconds", "decode_seconds_per_seq"):
            if getattr(self, name) < 0:
                raise QueueingError(f"{name} must be >= 0")
        if self.decode_base_seconds + self.decode_seconds_per_seq <= 0:
            # A zero-time iteration would let advance() loop forever at one instant.
            raise QueueingError("decode_base_seconds + decode_seconds_per_seq must be > 0")

    @property
    def num_gpu_blocks(self) -> int:
        return self.kv_cache_tokens // self.block_size


# --- request lengths ---------------------------------------------------------------------------


class Fixed(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag="fixed", tag_field="kind"
):
    value: int

    def sample(self, rng: random.Random) -> int:
        return self.value


class Uniform(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag="uniform", tag_field="kind"
):
    min: int
    max: int

    def sample(self, rng: random.Random) -> int:
        return rng.randint(self.min, self.max)


class LogNormal(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag="lognormal", tag_field="kind"
):
    """Long-tailed lengths as real prompts have; clamped to [min, max] so one sample cannot exceed the cache."""

    median: float
    sigma: float = 0.5
    min: int = 1
    max: int = 8192

    def sample(self, rng: random.Random) -> int:
        value = round(rng.lognormvariate(math.log(self.median), self.sigma))
        return max(self.min, min(self.max, value))


LengthDist = Fixed | Uniform | LogNormal


def length_bounds(dist: LengthDist) -> tuple[int, int]:
    """Smallest and largest length a distribution can produce (for validation)."""
    if isinstance(dist, Fixed):
        return dist.value, dist.value
    return dist.min, dist.max


# --- histograms --------------------------------------------------------------------------------

# vLLM's own bucket boundaries (vllm/engine/metrics.py), so PromQL written for vLLM reads the same.
TTFT_BUCKETS: Final = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                       7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip
ITL_BUCKETS: Final = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                      10.0, 20.0, 40.0, 80.0)  # fmt: skip
E2E_BUCKETS: Final = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
                      120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)  # fmt: skip
TOKEN_BUCKETS: Final = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0,
                        10000.0, 20000.0, 50000.0, 100000.0)  # fmt: skip


@dataclass
class Histogram:
    """A cumulative-bucket histogram that accepts weighted observations.

    prometheus-client's Histogram cannot observe "this value, n times", and one iteration produces the
    same inter-token latency for every running request; this keeps a 32-sequence batch one call.
    """

    bounds: tuple[float, ...]
    counts: list[int] = field(init=False)  # per bucket, not cumulative; last one is +Inf
    sum: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float, n: int = 1) -> None:
        if n <= 0:
            return
        self.counts[bisect.bisect_left(self.bounds, value)] += n
        self.sum += value * n
        self.count += n

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, cumulative count) pairs, ending with (+inf, count)."""
        out: list[tuple[float, int]] = []
        running = 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


@dataclass
class ReplicaStats:
    """Everything vLLM exports as counters and histograms, as the model accumulates it."""

    requests_arrived: int = 0
    requests_succeeded: int = 0
    requests_rejected: int = 0
    prompt_tokens: int = 0  # counted at prefill, as vLLM does
    generation_tokens: int = 0
    ttft: Histogram = field(default_factory=lambda: Histogram(TTFT_BUCKETS))
    itl: Histogram = field(default_factory=lambda: Histogram(ITL_BUCKETS))
    e2e: Histogram = field(default_factory=lambda: Histogram(E2E_BUCKETS))
    request_prompt_tokens: Histogram = field(default_factory=lambda: Histogram(TOKEN_BUCKETS))
    request_generation_tokens: Histogram = field(default_factory=lambda: Histogram(TOKEN_BUCKETS))


# --- the replica -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Request:
    arrival: float
    input_tokens: int
    output_tokens: int
    id: int = 0


@dataclass(frozen=True, kw_only=True)
class Completion:
    """One finished request, with the latencies a client would have measured."""

    request: Request
    ttft: float
    e2e: float
    finished: float


@dataclass(slots=True)
class _Running:
    request: Request
    blocks: int
    seq: int  # admission order: completions of one iteration are reported in this order
    first_token_at: float = 0.0


Outcome = Literal["queued", "rejected"]


class Replica:
    """One vLLM replica. Call `advance(t)` / `submit(request)` with non-decreasing times.

    Iterations are numbered; a request admitted (prefilled) in iteration `p` produces one token per
    iteration and finishes in iteration `p + output_tokens - 1`, so nothing needs to touch a running
    request between its admission and its completion. Between such events every iteration has the
    same membership and duration: `advance` runs those in a tight loop that only keeps the clock and
    the inter-token-latency histogram (with the same floating-point operations, in the same order, as
    running them one by one — tests/unit/sandbox/test_queueing_equivalence.py holds it to that).
    """

    def __init__(self, params: ServerParams) -> None:
        self.params = params
        self.stats = ReplicaStats()
        self.completions: deque[Completion] = deque(maxlen=10_000)  # for tests and tools; bounded
        self._now = 0.0
        self._waiting: deque[Request] = deque()
        self._running: dict[int, _Running] = {}  # by admission seq, in admission order
        self._finishing: list[tuple[int, int, _Running]] = []  # heap of (finishing iteration, seq, entry)
        self._blocks_used = 0
        self._seq = 0
        # The in-flight iteration: its number, when it ends and which requests it prefills. Its
        # membership is fixed when it starts, as in vLLM, so a request arriving mid-iteration waits.
        self._iteration = -1
        self._iter_end: float | None = None
        self._iter_prefill: list[_Running] = []
        self._last_end = 0.0  # end of the previous iteration: when every running request got a token

    # -- observation

    @property
    def now(self) -> float:
        return self._now

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    @property
    def num_running(self) -> int:
        return len(self._running)

    @property
    def kv_cache_usage(self) -> float:
        return self._blocks_used / self.params.num_gpu_blocks

    def in_flight(self) -> list[Request]:
        """Requests accepted and not finished (running, then waiting): what a deleted pod loses."""
        return [e.request for e in self._running.values()] + list(self._waiting)

    # -- driving

    def blocks_for(self, request: Request) -> int:
        return -(-(request.input_tokens + request.output_tokens) // self.params.block_size)

    def submit(self, request: Request) -> Outcome:
        """Enqueue a request arriving at `request.arrival` (>= the model's current time)."""
        if request.arrival < self._now:
            raise QueueingError(
                f"request arrives at {request.arrival} but the replica is already at {self._now}"
            )
        self.advance(request.arrival)
        self.stats.requests_arrived += 1
        if request.input_tokens < 1 or request.output_tokens < 1:
            raise QueueingError("a request needs at least one input and one output token")
        if self.blocks_for(request) > self.params.num_gpu_blocks:
            # vLLM rejects a prompt longer than the cache up front rather than queueing it forever.
            self.stats.requests_rejected += 1
            return "rejected"
        self._waiting.append(request)
        if self._iter_end is None:
            self._start_iteration(request.arrival)
        return "queued"

    def advance(self, t: float) -> None:
        """Run every iteration that ends at or before `t`; the model's clock becomes `t`."""
        while self._iter_end is not None and self._iter_end <= t:
            if not self._iter_prefill and self._finishing[0][0] > self._iteration:
                self._skip_plain_iterations(t)
                continue
            self._finish_iteration()
        self._now = max(self._now, t)

    def _admissible(self) -> bool:
        """Would the next iteration admit the head of the queue?"""
        return (
            bool(self._waiting)
            and len(self._running) < self.params.max_num_seqs
            and self._blocks_used + self.blocks_for(self._waiting[0]) <= self.params.num_gpu_blocks
        )

    def _skip_plain_iterations(self, t: float) -> None:
        """Finish the in-flight iteration and those after it while nobody is admitted or finishes.

        Such an iteration prefills nothing and every running request decodes one token, so it only
        moves the clock by the same duration and observes one inter-token latency per request.
        """
        assert self._iter_end is not None
        params = self.params
        n = len(self._running)
        # The expression _start_iteration uses, with no prefill, so the duration is the same float.
        duration = (
            params.prefill_seconds_per_token * 0
            + params.decode_base_seconds
            + params.decode_seconds_per_seq * n
        )
        itl = self.stats.itl
        bounds, counts = itl.bounds, itl.counts
        total = itl.sum
        stop = self._finishing[0][0]  # the next iteration in which a request finishes
        admissible = self._admissible()
        iteration, end, last = self._iteration, self._iter_end, self._last_end
        done = 0
        while True:
            gap = end - last
            counts[bisect.bisect_left(bounds, gap)] += n
            total += gap * n
            done += 1
            last = end
            iteration += 1
            if admissible:
                break  # the iteration that starts now admits someone: the full path handles it
            end = end + duration
            if iteration >= stop or end > t:
                break
        itl.sum = total
        itl.count += n * done
        self.stats.generation_tokens += n * done
        self._now = last
        self._last_end = last
        if admissible:
            self._iteration = iteration - 1  # _start_iteration numbers the next one
            self._start_iteration(last)
        else:
            self._iteration = iteration
            self._iter_end = end

    def _start_iteration(self, start: float) -> None:
        params = self.params
        self._iteration += 1
        admitted: list[_Running] = []
        while self._waiting and len(self._running) < params.max_num_seqs:
            blocks = self.blocks_for(self._waiting[0])
            if self._blocks_used + blocks > params.num_gpu_blocks:
                break  # FCFS: the head blocks the queue rather than letting small requests overtake
            request = self._waiting.popleft()
            self._blocks_used += blocks
            self._seq += 1
            entry = _Running(request=request, blocks=blocks, seq=self._seq)
            self._running[entry.seq] = entry
            heapq.heappush(self._finishing, (self._iteration + request.output_tokens - 1, entry.seq, entry))
            admitted.append(entry)
        if not self._running:
            self._iter_end = None
            self._iter_prefill = []
            return
        prefill_tokens = sum(e.request.input_tokens for e in admitted)
        duration = (
            params.prefill_seconds_per_token * prefill_tokens
            + params.decode_base_seconds
            + params.decode_seconds_per_seq * len(self._running)
        )
        self._now = max(self._now, start)
        self._iter_end = start + duration
        self._iter_prefill = admitted

    def _finish_iteration(self) -> None:
        assert self._iter_end is not None
        end = self._iter_end
        self._now = end
        stats = self.stats
        for entry in self._iter_prefill:
            stats.ttft.observe(end - entry.request.arrival)
            stats.prompt_tokens += entry.request.input_tokens
            entry.first_token_at = end
        # Every request that decoded in this iteration saw the same gap since its last token.
        decoding = len(self._running) - len(self._iter_prefill)
        stats.itl.observe(end - self._last_end if decoding else 0.0, decoding)
        stats.generation_tokens += len(self._running)
        finishing = self._finishing
        while finishing and finishing[0][0] == self._iteration:
            _, seq, entry = heapq.heappop(finishing)
            del self._running[seq]
            self._complete(entry, end)
        self._last_end = end
        self._start_iteration(end)

    def _complete(self, entry: _Running, end: float) -> None:
        request = entry.request
        self._blocks_used -= entry.blocks
        stats = self.stats
        stats.requests_succeeded += 1
        stats.e2e.observe(end - request.arrival)
        stats.request_prompt_tokens.observe(request.input_tokens)
        stats.request_generation_tokens.observe(request.output_tokens)
        self.completions.append(
            Completion(
                request=request,
                ttft=entry.first_token_at - request.arrival,
                e2e=end - request.arrival,
                finished=end,
            )
        )
