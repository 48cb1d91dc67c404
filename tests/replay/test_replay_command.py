"""`wva replay` over recorded files: decisions printed, --check, and a what-if configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.cli import main

HERE = Path(__file__).parent
BURST = HERE / "burst_two_variants.jsonl"


def recording_from(script: Path, out: Path) -> Path:
    """Turn a replay script into what `wva record` writes: expectations become recorded decisions."""
    lines = []
    for raw in script.read_text().splitlines():
        entry = json.loads(raw)
        if "note" in entry:
            continue
        if "expect" in entry:
            entry = {"t": entry["t"], "subject": "wva.decisions.x.y", "event": {"kind": "decision.v1", **entry["expect"]}}
        else:
            entry["subject"] = "wva.something"
        lines.append(json.dumps(entry))
    out.write_text("\n".join(lines) + "\n")
    return out


def test_replay_check_passes_on_the_recorded_decisions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recording = recording_from(BURST, tmp_path / "rec.jsonl")
    assert main(["replay", str(recording), "--check", "--tick-interval", "0"]) == 0
    out = capsys.readouterr()
    assert "identical" in out.err
    assert "llm/a 1->" in out.out  # decisions are printed


def test_replay_with_another_config_reports_the_differences(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recording = recording_from(BURST, tmp_path / "rec.jsonl")
    what_if = tmp_path / "what-if.yaml"
    what_if.write_text("default:\n  kvCacheThreshold: 0.99\n  kvSpareTrigger: 0.01\n")
    assert main(["replay", str(recording), "--check", "--tick-interval", "0", "--config", str(what_if)]) == 1
    assert "differ" in capsys.readouterr().err


def test_replay_rejects_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"t": 1, "event": {"kind": "nonsense.v1"}}\n')
    assert main(["replay", str(bad)]) == 2
    assert "wva replay:" in capsys.readouterr().err
    bad_config = tmp_path / "c.yaml"
    bad_config.write_text("default:\n  kvCacheThreshold: 2\n")
    assert main(["replay", str(BURST), "--config", str(bad_config)]) == 2
    assert "kvCacheThreshold" in capsys.readouterr().err


def test_one_extra_decision_is_reported_once_not_as_a_cascade() -> None:
    from datetime import UTC, datetime

    from services.scaler.replay_command import differences
    from shared.messages import Decision

    at = datetime(2026, 1, 1, tzinfo=UTC)

    def d(desired: int, reason: str) -> Decision:
        return Decision(namespace="llm", name="a", at=at, current=1, desired=desired, reason=reason)

    recorded = [{"namespace": "llm", "name": "a", "desired": n, "reason": r} for n, r in [(1, "hold"), (2, "up"), (3, "up")]]
    replayed = [d(1, "hold"), d(1, "hold_extra"), d(2, "up"), d(3, "up")]
    assert differences(replayed, recorded) == [
        "decision #1: replayed {'namespace': 'llm', 'name': 'a', 'desired': 1, 'reason': 'hold_extra'}, not recorded"
    ]
    assert differences(replayed[:1] + replayed[2:], recorded) == []
