from __future__ import annotations

from datetime import UTC, datetime

from services.tools import formatting, subscription
from shared import messages as m
from shared.subjects import Subjects

AT = datetime(2026, 1, 1, 12, 0, 0, 250000, tzinfo=UTC)


def test_snapshot_line_shows_what_a_person_checks_first() -> None:
    snap = m.MetricsSnapshot(
        namespace="llm",
        name="a",
        at=AT,
        collected_at=AT,
        replicas=(
            m.ReplicaMetrics(pod="p1", kv_cache_usage=0.65, waiting=0),
            m.ReplicaMetrics(pod="p2", kv_cache_usage=0.72, waiting=2),
        ),
        allocation=m.AllocationMetrics(arrival_rate=3.5, ttft_seconds=0.21),
    )
    line = formatting.format_line("wva.metrics.llm.a", m.encode(snap))
    assert line.startswith("12:00:00.250 wva.metrics.llm.a metrics.v1 status=ok replicas=2")
    assert "kv=[0.65,0.72]" in line and "waiting=[0,2]" in line and "rate=3.50rps" in line


def test_target_line_flags_problems_and_unresolved() -> None:
    target = m.Target(
        namespace="llm", name="a", at=AT, model_id="m", problems=(m.Problem(field="spec.modelID", message="missing"),)
    )
    line = formatting.format_line("wva.targets.llm.a", m.encode(target))
    assert "UNRESOLVED" in line and "problems=spec.modelID: missing" in line


def test_decision_and_garbage() -> None:
    decision = m.Decision(namespace="llm", name="a", at=AT, current=2, desired=3, reason="scale_up_saturated", applied=True)
    assert "2->3 scale_up_saturated applied" in formatting.format_line("wva.decisions.llm.a", m.encode(decision))
    assert "! malformed" in formatting.format_line("wva.metrics.llm.a", b"\x00garbage")
    # What the services would reject is shown as such: a payload for another VA than its subject's.
    assert "! subject_mismatch" in formatting.format_line("wva.decisions.llm.b", m.encode(decision))
    other = Subjects("tenant")
    assert "scale_up_saturated" in formatting.format_line("tenant.decisions.llm.a", m.encode(decision), subjects=other)


def test_stored_filters_split_per_stream() -> None:
    s = Subjects()
    assert subscription.stored_filters(s, "wva.>") == [
        "wva.targets.>",
        "wva.metrics.>",
        "wva.invalidate.>",
        "wva.decisions.>",
        "wva.owners.>",
    ]
    assert subscription.stored_filters(s, "wva.*.llm.>")[0] == "wva.targets.llm.>"
    assert subscription.stored_filters(s, "wva.metrics.llm.a") == ["wva.metrics.llm.a"]
    assert subscription.stored_filters(s, "wva.fetch.>") == []


def test_ownership_and_lease_lines() -> None:
    owned = m.Ownership(namespace="scaler", name="scaler-a-1f2e3d", at=AT, partitions=16, owned=("0", "3"))
    line = formatting.format_line("wva.owners.scaler.scaler-a-1f2e3d", m.encode(owned))
    assert line.endswith("ownership.v1 service=scaler replica=scaler-a-1f2e3d holds=0,3 of=16")
    assert formatting.lease_line("scaler.3", "scaler-a-1f2e3d", 12) == "lease scaler.3 = scaler-a-1f2e3d (rev 12)"
    assert formatting.lease_line("scaler.3", None, 13, deleted=True) == "lease scaler.3 given back (rev 13)"
    assert "not a replica identity" in formatting.lease_line("scaler.3", None, 14)
