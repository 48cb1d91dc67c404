"""Each recorded scenario replays to the decisions written down by hand, and deterministically."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.scaler.replay import ReplayError, check, parse, run_replay

FILES = sorted(Path(__file__).parent.glob("*.jsonl"))


def test_the_scenarios_exist() -> None:
    assert {f.name for f in FILES} >= {
        "burst_two_variants.jsonl",
        "scale_down_after_stabilization.jsonl",
        "invalidation_then_fresh_snapshot.jsonl",
    }


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_replays_to_expected_decisions(path: Path) -> None:
    lines = path.read_text().splitlines()
    assert check(lines) == []
    assert parse(lines).expectations  # a file without expectations would prove nothing


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_replay_is_deterministic(path: Path) -> None:
    lines = path.read_text().splitlines()
    assert run_replay(lines) == run_replay(lines)


def test_check_reports_differences() -> None:
    lines = (Path(__file__).parent / "invalidation_then_fresh_snapshot.jsonl").read_text().splitlines()
    tampered = [line.replace('"scale_up_saturated"', '"scale_up_spare_kv_low"') for line in lines]
    problems = check(tampered)
    assert len(problems) == 1
    assert "reason: expected 'scale_up_spare_kv_low', got 'scale_up_saturated'" in problems[0]
    missing = check([*lines, '{"t": 99, "expect": {"name": "a", "desired": 1}}'])
    assert len(missing) == 1 and "expected, not produced" in missing[0]
    extra = check([line for line in lines if '"expect"' not in line or "hold_stale_metrics" not in line])
    assert len(extra) == 1 and "not expected" in extra[0]


@pytest.mark.parametrize(
    "line",
    ["not json", '{"t": 1}', '{"t": 1, "event": {"kind": "decision.v1"}}', '{"t": 1, "event": {"kind": "nope"}}'],
)
def test_bad_lines_are_named(line: str) -> None:
    with pytest.raises(ReplayError, match="line 1"):
        parse([line])
