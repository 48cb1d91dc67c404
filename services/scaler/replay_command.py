"""``wva replay FILE``: run the scaler core over recorded events and print the decisions.

Reads what ``wva record`` writes (or a hand-written replay file, see ``replay.py``). Recorded
decisions become the expectations; ``--check`` fails when the core now decides differently — the
way to answer "what would it have done with kvCacheThreshold 0.7?" (``--config that.yaml``).
The scaler's periodic re-evaluations (ticks) are re-created from the recorded decisions they
produced (``trigger: tick``), at the instants the live scaler used.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from services.scaler import configsource, replay
from services.scaler.scaling_config import ConfigSet, ScalingConfigError, parse_configmap
from services.scaler.settings import MODES
from shared.messages import Decision, ScalerMode
from shared.settings import duration

HELP = "replay recorded events through the scaler core; --check compares with recorded decisions"

_COMPARED = ("namespace", "name", "desired", "reason")
DEFAULT_TICK = 30.0  # the scaler's default WVA_RECONCILE_INTERVAL


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="JSONL recording (wva record) or replay script")
    parser.add_argument("--config", help="saturation config YAML (ConfigMap manifest or its data) to decide with")
    parser.add_argument("--check", action="store_true", help="exit 1 when decisions differ from the recorded ones")
    parser.add_argument("--mode", choices=MODES, default="scale", help="scaler mode to replay in")
    parser.add_argument(
        "--tick-interval",
        default=None,
        help="re-create periodic ticks this often instead of from the recorded decisions (0: no ticks)",
    )


def _epoch(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def normalize(lines: Iterable[str], tick_interval: float | None) -> Iterator[str]:
    """Recording lines -> replay-script lines: decisions become expectations, ticks are re-created.

    Ticks come from the recorded decisions the scaler's timer produced (``trigger == "tick"``, at the
    decision's own ``at``) — the same instants the live scaler evaluated at. Older recordings without
    triggers, or ``tick_interval`` given, get a tick every ``tick_interval`` seconds instead.
    """
    entries: list[dict[str, Any]] = [json.loads(raw) for raw in lines if raw.strip()]
    ticks: set[float] = set()
    if tick_interval is None:
        for entry in entries:
            event = entry.get("event")
            if isinstance(event, dict) and event.get("kind") == "decision.v1" and event.get("trigger") == "tick":
                at = _epoch(event.get("at"))
                if at is not None:
                    ticks.add(at)
        if not ticks and any(isinstance(e.get("event"), dict) for e in entries):
            tick_interval = DEFAULT_TICK
    times = [float(e["t"]) for e in entries if isinstance(e.get("t"), (int, float))]
    if tick_interval and times:
        t = times[0] + tick_interval
        while t <= times[-1]:
            ticks.add(t)
            t += tick_interval
    out: list[tuple[float, int, str]] = [(t, 0, json.dumps({"t": t, "event": {"kind": "tick"}})) for t in ticks]
    for order, entry in enumerate(entries, start=1):
        entry.pop("subject", None)
        event = entry.get("event")
        if isinstance(event, dict) and event.get("kind") == "decision.v1":
            entry = {"t": entry.get("t"), "expect": {k: event.get(k) for k in _COMPARED}}
        when = entry.get("t")
        # A tick sorts before the events stored in the same instant (it produced their decisions).
        out.append((float(when) if isinstance(when, (int, float)) else float("-inf"), order, json.dumps(entry)))
    for _, _, line in sorted(out, key=lambda item: (item[0], item[1])):
        yield line


def differences(produced: list[Decision], expected: list[dict[str, Any]]) -> list[str]:
    """The decisions that differ, as a diff of the two sequences (times are ignored: they differ by
    delivery jitter). One extra hold shows as one line, not as every decision after it."""
    got = [tuple(getattr(d, k) for k in _COMPARED) for d in produced]
    want = [tuple(e.get(k) for k in _COMPARED) for e in expected]
    problems = []
    matcher = difflib.SequenceMatcher(a=want, b=got, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        for i in range(i1, i2):
            problems.append(f"decision #{i}: recorded {dict(zip(_COMPARED, want[i], strict=True))}, not replayed")
        for j in range(j1, j2):
            problems.append(f"decision #{j}: replayed {dict(zip(_COMPARED, got[j], strict=True))}, not recorded")
    return problems


def load_configs(path: str | None) -> ConfigSet | None:
    if path is None:
        return None
    return parse_configmap(configsource.file_data(Path(path).read_text()))


def run(args: argparse.Namespace) -> int:
    try:
        tick = None if args.tick_interval is None else duration(args.tick_interval)
        configs = load_configs(args.config)
        lines = list(normalize(Path(args.file).read_text().splitlines(), tick))
        script = replay.parse(lines)
        produced = replay.run_replay(lines, configs, mode=cast(ScalerMode, args.mode))
    except (OSError, ValueError, ScalingConfigError, replay.ReplayError) as exc:
        print(f"wva replay: {exc}", file=sys.stderr)
        return 2
    for d in produced:
        print(f"t={d.at.timestamp():.3f} {d.namespace}/{d.name} {d.current}->{d.desired} {d.reason} {d.detail}")
    if not args.check:
        return 0
    problems = differences(produced, [e.fields for e in script.expectations])
    for problem in problems:
        print(problem, file=sys.stderr)
    print(
        f"replay: {len(produced)} decisions, {len(script.expectations)} recorded, "
        f"{'identical' if not problems else f'{len(problems)} differ'}",
        file=sys.stderr,
    )
    return 1 if problems else 0
