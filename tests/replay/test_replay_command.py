"""`wva replay` over recordings: exact reconstruction of what the live core read, --check, what-if.

A "live run" here is the real core driven the way the service shell drives it (stream sequences,
``Started``, outcomes from a fake actuator that can fail), and its recording is what `wva record`
writes: every stored message with the time NATS stored it, its stream and sequence. The recorder's
clock and the core's order differ on purpose: the replay must follow the core's order.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import msgspec
import pytest

from services.cli import main
from services.scaler.actions import ScaleAction
from services.scaler.core import Scaler
from services.scaler.events import Event, ScaleApplied, ScaleFailed, Started, Tick
from services.scaler.replay import Expectation
from services.scaler.replay_command import differences
from shared.messages import Decision, MetricsSnapshot, Target
from tests.unit.scaler.builders import NS, dt, snapshot, target

STREAM_OF = {"target.v1": "targets", "metrics.v1": "metrics", "invalidation.v1": "events", "decision.v1": "events"}


class LiveRun:
    """The core as the shell runs it, and everything a recorder would have stored."""

    def __init__(self, *, seed: int, fail_every: int = 0, started: tuple[int, int, int] = (0, 0, 0)) -> None:
        self.core = Scaler()
        self.seq = dict.fromkeys(("targets", "metrics", "events"), 0)
        self.lines: list[dict[str, Any]] = []
        self.rng = random.Random(seed)
        self.fail_every = fail_every
        self.attempts = 0
        self.outbox: list[tuple[float, Event]] = []
        self.core.handle(Started(*started), 0)

    def store(self, message: msgspec.Struct, now: float) -> int:
        kind = json.loads(msgspec.json.encode(message))["kind"]
        stream = STREAM_OF[kind]
        self.seq[stream] += 1
        # NATS stores with its own clock; the recorder's order may differ from the core's by jitter.
        t = now - self.rng.uniform(0.0, 0.004)
        subject = f"wva.{'decisions' if kind == 'decision.v1' else stream}.{NS}.{message.name}"  # type: ignore[attr-defined]
        self.lines.append({"t": t, "subject": subject, "stream": stream, "seq": self.seq[stream],
                           "event": json.loads(msgspec.json.encode(message))})
        return self.seq[stream]

    def deliver(self, message: Target | MetricsSnapshot, now: float) -> None:
        self.handle(message, now, self.store(message, now))

    def handle(self, event: Event, now: float, seq: int | None = None) -> None:
        for action in self.core.handle(event, now, seq=seq):
            if isinstance(action, Decision):
                self.store(action, now)
            elif isinstance(action, ScaleAction):
                self.attempts += 1
                outcome: Event
                if self.fail_every and self.attempts % self.fail_every == 0:
                    outcome = ScaleFailed(action.namespace, action.name, action.replicas, "failed", "HTTP 500")
                else:
                    outcome = ScaleApplied(action.namespace, action.name, action.replicas)
                self.outbox.append((now + 0.05, outcome))

    def settle(self, until: float) -> None:
        while self.outbox and self.outbox[0][0] <= until:
            when, outcome = self.outbox.pop(0)
            self.handle(outcome, when)

    def write(self, path: Path) -> Path:
        path.write_text("".join(json.dumps(line) + "\n" for line in sorted(self.lines, key=lambda x: x["t"])))
        return path


def burst_run(seed: int = 1, *, fail_every: int = 0) -> LiveRun:
    run = LiveRun(seed=seed, fail_every=fail_every)
    spec = {"a": 1, "b": 2}
    generation = {"a": 1, "b": 1}
    for name, cost in (("a", 40), ("b", 80)):
        run.deliver(target(name, cost=cost, replicas=spec[name], max_replicas=6), 0)
    for step in range(1, 90):
        now = step * 5.0
        run.settle(now)
        for name, cost in (("a", 40), ("b", 80)):
            spec_now = run.core.last_decision(NS, name)
            desired = spec_now.desired if spec_now is not None and spec_now.applied else spec[name]
            if desired != spec[name]:  # the Deployment follows an applied step
                spec[name], generation[name] = desired, generation[name] + 1
                run.deliver(target(name, cost=cost, replicas=spec[name], generation=generation[name], max_replicas=6), now)
        kv = 0.92 if 60 <= now < 120 else 0.08
        for name in ("b", "a") if step % 2 else ("a", "b"):
            run.deliver(snapshot(name, [kv] * spec[name], at=now, generation=generation[name]), now + 0.01)
        if step % 6 == 0:
            run.handle(Tick(), now + 2.5)
    run.settle(float("inf"))
    return run


def test_a_recording_replays_to_every_decision_exactly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = burst_run()
    decided = [line for line in run.lines if line["event"]["kind"] == "decision.v1"]
    reasons = {line["event"]["reason"] for line in decided}
    assert {"scale_up_saturated", "scale_down_spare_capacity", "hold_transition"} <= reasons
    assert main(["replay", str(run.write(tmp_path / "rec.jsonl")), "--check"]) == 0
    err = capsys.readouterr().err
    assert f"replay: {len(decided)} decisions, {len(decided)} recorded, identical" in err


def test_failed_steps_replay_exactly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = burst_run(fail_every=2)
    outcomes = {line["event"]["outcome"] for line in run.lines if line["event"]["kind"] == "decision.v1"}
    assert {"applied", "failed"} <= outcomes
    assert main(["replay", str(run.write(tmp_path / "rec.jsonl")), "--check"]) == 0
    assert "identical" in capsys.readouterr().err


@pytest.mark.parametrize("seed", range(5))
def test_the_recorders_clock_does_not_change_the_replay(seed: int, tmp_path: Path) -> None:
    assert main(["replay", str(burst_run(seed).write(tmp_path / "rec.jsonl")), "--check"]) == 0


def test_a_step_replays_from_the_evaluation_that_chose_it(tmp_path: Path) -> None:
    # Each stream has its own follower, so the core may read a message before one that NATS stored
    # earlier on another stream. Here a Target saying a's pod is not ready any more is stored just
    # before the snapshot that saturates a, but the core reads the snapshot first and chooses a step;
    # the Target comes while the step is in flight. The step's decision is published with its outcome,
    # and the replay must make the step where the live core chose it (``Decision.chosen``): fed in
    # store order up to the outcome, the Target would hold the group and the step would never be made
    # (it was never made in a replay of a sandbox run on a loaded machine).
    run = LiveRun(seed=3)
    run.deliver(target("a", replicas=1, max_replicas=6), 0)
    run.deliver(snapshot("a", [0.2], at=10), 10)
    unready = target("a", replicas=1, ready=0, max_replicas=6, t=60.0)
    seq = run.store(unready, 60.000)
    run.deliver(snapshot("a", [0.95], at=60.001), 60.001)
    run.handle(unready, 60.003, seq)
    run.settle(float("inf"))
    steps = [line["event"] for line in run.lines if line["event"]["kind"] == "decision.v1" and line["event"]["outcome"]]
    assert [(d["current"], d["desired"], d["chosen"]["trigger"]) for d in steps] == [(1, 2, "metrics.v1")]
    assert main(["replay", str(run.write(tmp_path / "rec.jsonl")), "--check"]) == 0


def test_replay_with_another_config_reports_the_differences(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recording = burst_run().write(tmp_path / "rec.jsonl")
    what_if = tmp_path / "what-if.yaml"
    what_if.write_text("default:\n  kvCacheThreshold: 0.99\n  kvSpareTrigger: 0.01\n")
    assert main(["replay", str(recording), "--check", "--config", str(what_if)]) == 1
    assert "differ" in capsys.readouterr().err


def test_a_tampered_recording_is_caught(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = burst_run()
    first_up = next(i for i, line in enumerate(run.lines) if line["event"].get("reason") == "scale_up_saturated")
    run.lines[first_up]["event"]["desired"] += 1
    assert main(["replay", str(run.write(tmp_path / "rec.jsonl")), "--check"]) == 1
    assert "replay: " in capsys.readouterr().err


def test_a_recording_without_stream_positions_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = tmp_path / "old.jsonl"
    old.write_text(json.dumps({"t": 0, "subject": "wva.targets.llm.a", "event": json.loads(msgspec.json.encode(target("a")))}) + "\n")
    assert main(["replay", str(old), "--check"]) == 2
    assert "stream positions" in capsys.readouterr().err


def test_replay_rejects_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"t": 1, "event": {"kind": "nonsense.v1"}}\n')
    assert main(["replay", str(bad)]) == 2
    assert "wva replay:" in capsys.readouterr().err
    bad_config = tmp_path / "c.yaml"
    bad_config.write_text("default:\n  kvCacheThreshold: 2\n")
    script = Path(__file__).parent / "burst_two_variants.jsonl"
    assert main(["replay", str(script), "--config", str(bad_config)]) == 2
    assert "kvCacheThreshold" in capsys.readouterr().err


def test_one_extra_decision_is_reported_once_not_as_a_cascade() -> None:
    at = dt(0)

    def d(desired: int, reason: str) -> Decision:
        return Decision(namespace="llm", name="a", at=at, current=1, desired=desired, reason=reason)

    fields = ("namespace", "name", "current", "desired", "reason", "applied", "outcome", "trigger")
    recorded = [Expectation(t=0, fields={k: getattr(x, k) for k in fields}, line=0) for x in (d(1, "hold"), d(2, "up"), d(3, "up"))]
    replayed = [d(1, "hold"), d(1, "hold_extra"), d(2, "up"), d(3, "up")]
    (problem,) = differences(replayed, recorded)
    assert problem.startswith("decision #1: replayed {") and "'hold_extra'" in problem and problem.endswith("not recorded")
    assert differences(replayed[:1] + replayed[2:], recorded) == []
