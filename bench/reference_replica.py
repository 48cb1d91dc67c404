"""The replica model as it was before the event-skipping rewrite: one Python iteration per decode step.

Kept, unchanged in behaviour, as the reference the fast `queueing.Replica` must match exactly
(test_queueing_equivalence.py) and as the baseline of the replica-model benchmark (bench/lab.py).
It shares the value types (`ServerParams`, `Request`, `Completion`, `ReplicaStats`) with queueing.py.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from services.sandbox.queueing import (
    Completion,
    Outcome,
    QueueingError,
    ReplicaStats,
    Request,
    ServerParams,
)


@dataclass
class _Running:
    request: Request
    blocks: int
    generated: int = 0
    first_token_at: float = 0.0
    last_token_at: float = 0.0


class ReferenceReplica:
    """One vLLM replica, one loop turn per engine iteration (the pre-rewrite `queueing.Replica`)."""

    def __init__(self, params: ServerParams) -> None:
        self.params = params
        self.stats = ReplicaStats()
        self.completions: deque[Completion] = deque(maxlen=10_000)
        self._now = 0.0
        self._waiting: deque[Request] = deque()
        self._running: list[_Running] = []
        self._blocks_used = 0
        self._iter_end: float | None = None
        self._iter_prefill: list[_Running] = []

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

    def blocks_for(self, request: Request) -> int:
        return -(-(request.input_tokens + request.output_tokens) // self.params.block_size)

    def submit(self, request: Request) -> Outcome:
        if request.arrival < self._now:
            raise QueueingError(
                f"request arrives at {request.arrival} but the replica is already at {self._now}"
            )
        self.advance(request.arrival)
        self.stats.requests_arrived += 1
        if request.input_tokens < 1 or request.output_tokens < 1:
            raise QueueingError("a request needs at least one input and one output token")
        if self.blocks_for(request) > self.params.num_gpu_blocks:
            self.stats.requests_rejected += 1
            return "rejected"
        self._waiting.append(request)
        if self._iter_end is None:
            self._start_iteration(request.arrival)
        return "queued"

    def advance(self, t: float) -> None:
        while self._iter_end is not None and self._iter_end <= t:
            self._finish_iteration()
        self._now = max(self._now, t)

    def _start_iteration(self, start: float) -> None:
        params = self.params
        admitted: list[_Running] = []
        while self._waiting and len(self._running) < params.max_num_seqs:
            blocks = self.blocks_for(self._waiting[0])
            if self._blocks_used + blocks > params.num_gpu_blocks:
                break
            request = self._waiting.popleft()
            self._blocks_used += blocks
            entry = _Running(request=request, blocks=blocks)
            self._running.append(entry)
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
        prefilled = {id(e) for e in self._iter_prefill}
        still_running: list[_Running] = []
        decoding = 0
        itl_value = 0.0
        for entry in self._running:
            request = entry.request
            if id(entry) in prefilled:
                stats.ttft.observe(end - request.arrival)
                stats.prompt_tokens += request.input_tokens
                entry.first_token_at = end
            else:
                itl_value = end - entry.last_token_at
                decoding += 1
            entry.generated += 1
            entry.last_token_at = end
            if entry.generated >= request.output_tokens:
                self._complete(entry, end)
            else:
                still_running.append(entry)
        stats.itl.observe(itl_value, decoding)
        stats.generation_tokens += len(self._running)
        self._running = still_running
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
