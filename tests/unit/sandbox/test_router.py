"""The router sends to the least-loaded ready replica of a model, across variants, and nowhere else."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from services.sandbox import router as routing


@dataclass
class FakeBackend:
    in_flight: int = 0
    slots: int = 10
    accepts: bool = True

    def submit(self, *, input_tokens: int, output_tokens: int) -> bool:
        if self.accepts:
            self.in_flight += 1
        return self.accepts

    def load(self) -> float:
        return self.in_flight / self.slots


def test_least_loaded_ready_replica_across_variants_wins() -> None:
    r = routing.Router()
    a1, a2, b1 = FakeBackend(in_flight=5), FakeBackend(in_flight=3), FakeBackend(in_flight=8, slots=40)
    r.add(routing.pod_key("llm", "cheap-1"), model_id="m", backend=a1, ready=True)
    r.add(routing.pod_key("llm", "cheap-2"), model_id="m", backend=a2, ready=True)
    r.add(routing.pod_key("llm", "big-1"), model_id="m", backend=b1, ready=True)  # 8/40 = 0.2, least
    assert r.choose("m") == "llm/big-1"
    # load is per batch slot: the big replica takes requests until it is as full (0.3) as cheap-2,
    # then the two share (ties to the first name); the busiest replica, cheap-1, gets nothing.
    for _ in range(8):
        assert r.route("m", input_tokens=1, output_tokens=1)
    assert (a1.in_flight, a2.in_flight, b1.in_flight) == (5, 4, 15)
    assert r.counters["m"].routed == 8


def test_unready_and_removed_replicas_get_nothing() -> None:
    r = routing.Router()
    ready, starting, gone = FakeBackend(in_flight=9), FakeBackend(), FakeBackend()
    r.add(routing.pod_key("llm", "a"), model_id="m", backend=ready, ready=True)
    r.add(routing.pod_key("llm", "b"), model_id="m", backend=starting)  # not ready yet
    r.add(routing.pod_key("llm", "c"), model_id="m", backend=gone, ready=True)
    r.remove(routing.pod_key("llm", "c"))
    for _ in range(5):
        r.route("m", input_tokens=1, output_tokens=1)
    assert (ready.in_flight, starting.in_flight, gone.in_flight) == (14, 0, 0)
    r.set_ready(routing.pod_key("llm", "b"), True)
    r.route("m", input_tokens=1, output_tokens=1)
    assert starting.in_flight == 1
    r.set_ready(routing.pod_key("llm", "b"), False)
    r.set_ready(routing.pod_key("llm", "a"), False)
    assert not r.route("m", input_tokens=1, output_tokens=1)
    assert r.counters["m"].no_replica == 1


def test_models_do_not_share_replicas() -> None:
    r = routing.Router()
    other = FakeBackend()
    r.add(routing.pod_key("llm", "x"), model_id="other", backend=other, ready=True)
    assert not r.route("m", input_tokens=1, output_tokens=1)
    assert other.in_flight == 0


def test_ties_go_to_the_first_name_and_rejections_are_counted() -> None:
    r = routing.Router()
    r.add(routing.pod_key("llm", "b"), model_id="m", backend=FakeBackend(), ready=True)
    r.add(routing.pod_key("llm", "a"), model_id="m", backend=FakeBackend(accepts=False), ready=True)
    assert r.choose("m") == "llm/a"
    assert not r.route("m", input_tokens=1, output_tokens=1)
    assert r.counters["m"].rejected == 1
    assert r.routed_to(routing.pod_key("llm", "a")) == 0


# ---------------------------------------------------------------- flow control (the gateway's queue)


def _load(
    key: str, *, waiting: int = 0, running: int = 0, kv: float = 0.0, slots: int = 10
) -> routing.ReplicaLoad:
    return routing.ReplicaLoad(
        key=key, waiting=waiting, running=running, kv_cache_usage=kv, max_num_seqs=slots
    )


def test_capacity_follows_the_saturation_detector_defaults() -> None:
    # At most 5 waiting and at most 80 % KV: both bounds included, as the extension's detector has them.
    assert routing.has_capacity(_load("a", waiting=5, kv=0.8))
    assert not routing.has_capacity(_load("a", waiting=6, kv=0.1))
    assert not routing.has_capacity(_load("a", waiting=0, kv=0.81))


def test_flow_control_picks_the_least_loaded_replica_that_has_capacity() -> None:
    replicas = [
        _load("pod-a", waiting=0, running=9, kv=0.85),  # least loaded but KV too full
        _load("pod-b", waiting=2, running=8, kv=0.5),
        _load("pod-c", waiting=6, running=0, kv=0.1),  # queue too deep
        _load("pod-d", waiting=1, running=9, kv=0.5),
    ]
    assert routing.pick(replicas, flow_control=True) == "pod-b"  # ties (1.0) go to the first key
    assert routing.pick(replicas, flow_control=False) == "pod-c"  # what Router does: load only
    assert routing.pick([replicas[0], replicas[2]], flow_control=True) is None
    assert routing.pick([], flow_control=False) is None


def test_flow_queue_is_fifo_per_model_and_times_out() -> None:
    queue: routing.FlowQueue[int] = routing.FlowQueue(timeout=60.0)
    queue.push("m1", 1, now=0.0)
    queue.push("m2", 2, now=5.0)
    queue.push("m1", 3, now=10.0)
    assert (queue.size("m1"), queue.size("m2"), queue.models()) == (2, 1, ["m1", "m2"])
    assert queue.expire(59.9) == []
    assert queue.expire(65.0) == [(1, 60.0), (2, 65.0)]
    assert queue.pop("m1") == 3
    assert not queue.waiting()
    queue.push("m1", 4, now=70.0)
    assert queue.drain() == [4] and queue.size("m1") == 0
    with pytest.raises(ValueError, match="timeout"):
        routing.FlowQueue(timeout=0)
