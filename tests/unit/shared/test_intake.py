"""The one rule for input: subject and payload agree, rejections are counted and logged at a bounded rate."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from shared import intake, messages
from shared.intake import Intake
from shared.observability import MESSAGES_REJECTED
from shared.subjects import Subjects

AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
S = Subjects()


def _rejected(kind: str, reason: str) -> float:
    value: float = MESSAGES_REJECTED.labels(subject_kind=kind, reason=reason)._value.get()
    return value


def test_a_matching_message_is_returned() -> None:
    target = messages.Target(namespace="llm", name="llama.v2", at=AT)
    got = intake.check(S, S.targets("llm", "llama.v2"), messages.encode(target), decoder=messages.targets_decoder)
    assert got == target


@pytest.mark.parametrize(
    ("subject", "message", "reason"),
    [
        # Item 2: a payload that speaks for another VA than its subject.
        ("wva.targets.llm.other", messages.Target(namespace="llm", name="llama", at=AT), "subject_mismatch"),
        ("wva.targets.team-b.llama", messages.Target(namespace="llm", name="llama", at=AT), "subject_mismatch"),
        ("wva.metrics.llm.llama", messages.TargetDeleted(namespace="llm", name="llama", at=AT), "unknown_kind"),
        # A decision is an event, but not one the invalidation subject carries.
        (
            "wva.invalidate.llm.llama",
            messages.Decision(namespace="llm", name="llama", at=AT, current=1, desired=2, reason="x"),
            "wrong_subject",
        ),
        ("wva.targets.llm.Bad_Name", messages.Target(namespace="llm", name="llama", at=AT), "invalid_subject"),
        ("elsewhere.targets.llm.llama", messages.Target(namespace="llm", name="llama", at=AT), "invalid_subject"),
    ],
)
def test_subject_and_payload_must_agree(subject: str, message: messages.AnyMessage, reason: str) -> None:
    decoder = messages.any_decoder if reason == "wrong_subject" else (
        messages.metrics_decoder if ".metrics." in subject else messages.targets_decoder
    )
    with pytest.raises(messages.MessageError) as err:
        intake.check(S, subject, messages.encode(message), decoder=decoder)
    assert err.value.reason == reason


def test_a_fetch_reply_is_checked_against_its_request_subject() -> None:
    snapshot = messages.MetricsSnapshot(namespace="llm", name="llama", at=AT, collected_at=AT)
    data = messages.encode(snapshot)
    assert intake.check(S, S.fetch("llm", "llama"), data, decoder=messages.metrics_decoder) == snapshot
    with pytest.raises(messages.MessageError, match="subject_mismatch"):
        intake.check(S, S.fetch("llm", "other"), data, decoder=messages.metrics_decoder)


def test_rejections_are_counted_by_subject_kind_and_reason() -> None:
    box = Intake(S)
    before = {
        ("targets", "subject_mismatch"): _rejected("targets", "subject_mismatch"),
        ("metrics", "too_deep"): _rejected("metrics", "too_deep"),
        ("unknown", "invalid_subject"): _rejected("unknown", "invalid_subject"),
    }
    target = messages.encode(messages.Target(namespace="llm", name="llama", at=AT))
    assert box.accept("wva.targets.llm.other", target, decoder=messages.targets_decoder) is None
    deep = b'{"kind":"metrics.v1","x":' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert box.accept("wva.metrics.llm.llama", deep, decoder=messages.metrics_decoder) is None
    assert box.accept("nonsense", target, decoder=messages.targets_decoder) is None
    for (kind, reason), value in before.items():
        assert _rejected(kind, reason) == value + 1, (kind, reason)


def test_rejections_are_logged_once_per_subject_kind_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    box = Intake(S, log_interval=60.0, clock=lambda: now[0])
    bad = b"\x00 not json"
    caplog.set_level(logging.WARNING, logger="wva.intake")
    for _ in range(500):
        box.accept("wva.targets.llm.llama", bad, decoder=messages.targets_decoder)
    box.accept("wva.metrics.llm.llama", bad, decoder=messages.metrics_decoder)  # another kind: its own line
    lines = [r for r in caplog.records if r.name == "wva.intake"]
    assert len(lines) == 2
    assert "wva.targets.llm.llama" in lines[0].getMessage() and "malformed" in lines[0].getMessage()
    now[0] += 61.0
    box.accept("wva.targets.llm.llama", bad, decoder=messages.targets_decoder)
    lines = [r for r in caplog.records if r.name == "wva.intake"]
    assert len(lines) == 3
    assert "499 more rejected on targets subjects" in lines[2].getMessage()


def test_the_subject_kind_label_takes_bounded_values() -> None:
    box = Intake(Subjects("tenant.wva"))
    assert box.subject_kind("tenant.wva.metrics.llm.x") == "metrics"
    assert box.subject_kind("tenant.wva.anything-an-attacker-likes.llm.x") == "unknown"
    assert box.subject_kind("wva.metrics.llm.x") == "unknown"  # another installation's prefix
