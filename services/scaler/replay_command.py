"""``wva replay FILE``: run the scaler core over recorded events and print the decisions.

Reads what ``wva record`` writes (or a hand-written replay script, see ``replay.py``). A recording is
turned back into the exact inputs the live core had (``recording.py``); ``--check`` fails unless every
recorded decision is reproduced — same VA, counts, reason, outcome, trigger and instant — and no other.
``--config`` gives the scaling configuration to decide with: the one the live scaler had, to check a
recording, or another one, to ask "what would it have done with kvCacheThreshold 0.7?".
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path
from typing import Any, cast

from services.scaler import configsource, recording, replay
from services.scaler.scaling_config import ScalingConfigError, parse_configmap
from services.scaler.settings import MODES
from shared.messages import Decision, ScalerMode

HELP = "replay recorded events through the scaler core; --check compares with recorded decisions"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="JSONL recording (wva record) or replay script")
    parser.add_argument("--config", help="scaling config YAML (ConfigMap manifest or its data) to decide with")
    parser.add_argument("--check", action="store_true", help="exit 1 when decisions differ from the recorded ones")
    parser.add_argument("--mode", choices=MODES, default="scale", help="scaler mode to replay in")


def _is_script(lines: list[str]) -> bool:
    for raw in lines:
        if not raw.strip():
            continue
        entry = json.loads(raw)
        if "expect" in entry or "note" in entry or "subject" not in entry:
            return True
    return False


def _key(fields: dict[str, Any], t: float) -> tuple[Any, ...]:
    return (round(t, 6), *(fields.get(k) for k in recording.COMPARED))


def differences(produced: list[Decision], expected: list[replay.Expectation]) -> list[str]:
    """The decisions that differ, as a diff of the two sequences: one extra decision shows as one
    line, not as every decision after it."""
    got = [_key({k: getattr(d, k) for k in recording.COMPARED}, d.at.timestamp()) for d in produced]
    want = [_key(e.fields, e.t) for e in expected]
    names = ("t", *recording.COMPARED)
    problems = []
    matcher = difflib.SequenceMatcher(a=want, b=got, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        for i in range(i1, i2):
            problems.append(f"decision #{i}: recorded {dict(zip(names, want[i], strict=True))}, not replayed")
        for j in range(j1, j2):
            problems.append(f"decision #{j}: replayed {dict(zip(names, got[j], strict=True))}, not recorded")
    return problems


def run(args: argparse.Namespace) -> int:
    mode = cast(ScalerMode, args.mode)
    try:
        data = configsource.file_data(Path(args.config).read_text()) if args.config else None
        configs = parse_configmap(data) if data is not None else None
        lines = Path(args.file).read_text().splitlines()
        produced: list[Decision] = []
        expected: list[replay.Expectation] = []
        if _is_script(lines):
            script = replay.parse(lines)
            produced, expected = replay.run(script.steps, configs, mode=mode), script.expectations
        else:
            for one in recording.runs(recording.read(lines), data):
                produced += replay.run(one.steps, configs, mode=mode, replica=one.replica)
                expected += one.expectations
    except (OSError, ValueError, ScalingConfigError, replay.ReplayError) as exc:
        print(f"wva replay: {exc}", file=sys.stderr)
        return 2
    for d in produced:
        print(f"t={d.at.timestamp():.3f} {d.namespace}/{d.name} {d.current}->{d.desired} {d.reason} {d.detail}")
    if not args.check:
        return 0
    problems = differences(produced, expected) if not _is_script(lines) else replay.compare(produced, expected)
    for problem in problems:
        print(problem, file=sys.stderr)
    print(
        f"replay: {len(produced)} decisions, {len(expected)} recorded, "
        f"{'identical' if not problems else f'{len(problems)} differ'}",
        file=sys.stderr,
    )
    return 1 if problems else 0
