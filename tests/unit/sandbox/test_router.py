"""The router sends to the least-loaded ready replica of a model, across variants, and nowhere else."""

from __future__ import annotations

from dataclasses import dataclass

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
