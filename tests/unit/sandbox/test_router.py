"""The router sends to the least-loaded ready replica of a model that has capacity, across variants,
and nowhere else; what cannot be sent waits in the model's queue (the gateway's flow control), which
is exported as the inference extension's gauge."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from services.sandbox import router as routing


@dataclass
class FakeBackend:
    in_flight: int = 0
    slots: int = 10
    accepts: bool = True
    waiting: int = 0
    kv: float = 0.0

    def submit(self, *, input_tokens: int, output_tokens: int) -> bool:
        if self.accepts:
            self.in_flight += 1
        return self.accepts

    def replica_load(self, key: str) -> routing.ReplicaLoad:
        return routing.ReplicaLoad(
            key=key, waiting=self.waiting, running=self.in_flight, kv_cache_usage=self.kv, max_num_seqs=self.slots
        )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def send(r: routing.Router, n: int = 1, model: str = "m") -> list[bool]:
    return [r.route(model, input_tokens=1, output_tokens=1) for _ in range(n)]


def test_least_loaded_ready_replica_across_variants_wins() -> None:
    r = routing.Router()
    a1, a2, b1 = FakeBackend(in_flight=5), FakeBackend(in_flight=3), FakeBackend(in_flight=8, slots=40)
    r.add(routing.pod_key("llm", "cheap-1"), model_id="m", backend=a1, ready=True)
    r.add(routing.pod_key("llm", "cheap-2"), model_id="m", backend=a2, ready=True)
    r.add(routing.pod_key("llm", "big-1"), model_id="m", backend=b1, ready=True)  # 8/40 = 0.2, least
    assert r.choose("m") == "llm/big-1"
    # load is per batch slot: the big replica takes requests until it is as full (0.3) as cheap-2,
    # then the two share (ties to the first name); the busiest replica, cheap-1, gets nothing.
    assert all(send(r, 8))
    assert (a1.in_flight, a2.in_flight, b1.in_flight) == (5, 4, 15)
    assert r.counters["m"].routed == 8 and r.counters["m"].queued == 0


def test_unready_and_removed_replicas_get_nothing() -> None:
    r = routing.Router()
    ready, starting, gone = FakeBackend(in_flight=9), FakeBackend(), FakeBackend()
    r.add(routing.pod_key("llm", "a"), model_id="m", backend=ready, ready=True)
    r.add(routing.pod_key("llm", "b"), model_id="m", backend=starting)  # not ready yet
    r.add(routing.pod_key("llm", "c"), model_id="m", backend=gone, ready=True)
    r.remove(routing.pod_key("llm", "c"))
    send(r, 5)
    assert (ready.in_flight, starting.in_flight, gone.in_flight) == (14, 0, 0)
    r.set_ready(routing.pod_key("llm", "b"), True)
    send(r)
    assert starting.in_flight == 1
    r.set_ready(routing.pod_key("llm", "b"), False)
    r.set_ready(routing.pod_key("llm", "a"), False)
    assert send(r) == [True]  # taken by the gateway: it waits, nothing is ready
    assert (ready.in_flight, starting.in_flight, r.queue_size("m")) == (14, 1, 1)


def test_a_model_at_zero_queues_its_requests_and_they_go_in_order_to_its_first_ready_replica() -> None:
    clock = Clock()
    r = routing.Router(clock=clock)
    r.add_model("m")
    assert r.queue_size("m") == 0
    for t in (0.0, 0.5, 1.0):
        clock.now = t
        assert send(r) == [True]
    assert (r.queue_size("m"), r.counters["m"].queued, r.counters["m"].routed) == (3, 3, 0)
    first = FakeBackend()
    clock.now = 4.0
    r.add(routing.pod_key("llm", "first"), model_id="m", backend=first)  # created, booting
    assert first.in_flight == 0 and r.queue_size("m") == 3
    r.set_ready(routing.pod_key("llm", "first"), True)  # served the moment it is ready
    assert (first.in_flight, r.queue_size("m"), r.counters["m"].routed) == (3, 0, 3)
    assert r.counters["m"].waited_seconds == pytest.approx(4.0 + 3.5 + 3.0)


def test_requests_wait_while_every_ready_replica_is_saturated_and_go_as_one_frees_up() -> None:
    r = routing.Router()
    full = FakeBackend(in_flight=10, waiting=6)  # 6 waiting: above the detector's 5
    hot = FakeBackend(in_flight=4, kv=0.85)  # KV above 80 %
    r.add(routing.pod_key("llm", "full"), model_id="m", backend=full, ready=True)
    r.add(routing.pod_key("llm", "hot"), model_id="m", backend=hot, ready=True)
    send(r, 4)
    assert (full.in_flight, hot.in_flight, r.queue_size("m")) == (10, 4, 4)
    hot.kv = 0.5  # it finished some requests
    r.dispatch()
    assert (hot.in_flight, r.queue_size("m"), r.counters["m"].routed) == (8, 0, 4)
    # The next arrival finds capacity again: the request that waited goes first, then the new one.
    hot.kv = 0.9
    send(r)
    assert r.queue_size("m") == 1
    hot.kv = 0.1
    send(r)
    assert hot.in_flight == 10 and r.queue_size("m") == 0 and r.counters["m"].queued == 5


def test_without_the_capacity_rule_only_a_model_with_no_ready_replica_waits() -> None:
    r = routing.Router(wait_for_capacity=False)
    full = FakeBackend(in_flight=10, waiting=40, kv=0.99)
    r.add(routing.pod_key("llm", "full"), model_id="m", backend=full, ready=True)
    send(r, 3)
    assert full.in_flight == 13 and r.queue_size("m") == 0
    r.set_ready(routing.pod_key("llm", "full"), False)
    send(r, 2)
    assert r.queue_size("m") == 2


def test_requests_that_wait_past_the_timeout_fail_and_are_never_sent() -> None:
    clock = Clock()
    r = routing.Router(request_timeout=10.0, clock=clock)
    send(r, 2)
    clock.now = 6.0
    send(r)
    clock.now = 10.0  # the first two are due (deadline 10), the third is not (16)
    assert r.queue_size("m") == 1
    late = FakeBackend()
    r.add(routing.pod_key("llm", "late"), model_id="m", backend=late, ready=True)
    assert late.in_flight == 1
    assert (r.counters["m"].timed_out, r.counters["m"].routed, r.counters["m"].queued) == (2, 1, 3)


def test_a_request_a_replica_rejects_is_counted_and_refused() -> None:
    r = routing.Router()
    r.add(routing.pod_key("llm", "b"), model_id="m", backend=FakeBackend(), ready=True)
    r.add(routing.pod_key("llm", "a"), model_id="m", backend=FakeBackend(accepts=False), ready=True)
    assert r.choose("m") == "llm/a"  # ties go to the first name
    assert send(r) == [False]
    assert r.counters["m"].rejected == 1
    assert r.routed_to(routing.pod_key("llm", "a")) == 0


def test_models_do_not_share_replicas() -> None:
    r = routing.Router()
    other = FakeBackend()
    r.add(routing.pod_key("llm", "x"), model_id="other", backend=other, ready=True)
    send(r)
    assert other.in_flight == 0 and r.queue_size("m") == 1


def test_the_queue_of_every_model_is_exported_as_the_inference_extensions_gauge() -> None:
    r = routing.Router()
    r.add_model("org/idle")
    r.add(routing.pod_key("llm", "x"), model_id="org/busy", backend=FakeBackend(kv=0.95), ready=True)
    send(r, 3, model="org/busy")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(routing.QueueSizeCollector(r))
    samples = {
        s.labels["target_model_name"]: s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
        if s.name == "inference_extension_flow_control_queue_size"
    }
    assert samples == {"org/idle": 0.0, "org/busy": 3.0}


async def test_the_dispatcher_sends_waiting_requests_as_capacity_frees_up() -> None:
    r = routing.Router()
    busy = FakeBackend(in_flight=10, waiting=6)
    r.add(routing.pod_key("llm", "busy"), model_id="m", backend=busy, ready=True)
    send(r, 2)
    task = asyncio.create_task(r.run(interval=0.01))
    try:
        await asyncio.sleep(0.05)
        assert r.queue_size("m") == 2  # still saturated: nothing sent
        busy.waiting = 0  # no new request arrives and no replica turns ready: only the loop can send
        async with asyncio.timeout(2):
            while r.queue_size("m"):
                await asyncio.sleep(0.01)
        assert busy.in_flight == 12
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


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
