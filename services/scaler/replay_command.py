"""``wva replay FILE``: run the scaler core over recorded events and print the decisions.

Reads what ``wva record`` writes (or a hand-written replay file, see ``replay.py``). Recorded
decisions become the expectations; ``--check`` fails when the core now decides differently — the
way to answer "what would it have done with kvCacheThreshold 0.7?" (``--config that.yaml``).
Recordings carry no ticks, so the periodic re-evaluation is re-created every ``--tick-interval``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, cast

from services.scaler import configsource, replay
from services.scaler.config import ConfigError, ConfigSet, parse_configmap
from services.scaler.settings import MODES
from shared import config
from shared.messages import Decision, ScalerMode

HELP = "replay recorded events through the scaler core; --check compares with recorded decisions"

_COMPARED = ("namespace", "name", "desired", "reason")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="JSONL recording (wva record) or replay script")
    parser.add_argument("--config", help="saturation config YAML (ConfigMap manifest or its data) to decide with")
    parser.add_argument("--check", action="store_true", help="exit 1 when decisions differ from the recorded ones")
    parser.add_argument("--mode", choices=MODES, default="scale", help="scaler mode to replay in")
    parser.add_argument("--tick-interval", default="30s", help="re-create periodic ticks this often (0: none)")


def normalize(lines: Iterable[str], tick_interval: float) -> Iterator[str]:
    """Recording lines -> replay-script lines: decisions become expectations, ticks are added."""
    next_tick: float | None = None
    for raw in lines:
        if not raw.strip():
            continue
        entry: dict[str, Any] = json.loads(raw)
        entry.pop("subject", None)
        t = entry.get("t")
        if tick_interval > 0 and isinstance(t, (int, float)):
            if next_tick is None:
                next_tick = float(t) + tick_interval
            while next_tick <= t:
                yield json.dumps({"t": next_tick, "event": {"kind": "tick"}})
                next_tick += tick_interval
        event = entry.get("event")
        if isinstance(event, dict) and event.get("kind") == "decision.v1":
            yield json.dumps({"t": t, "expect": {k: event.get(k) for k in _COMPARED}})
            continue
        yield json.dumps(entry)


def differences(produced: list[Decision], expected: list[dict[str, Any]]) -> list[str]:
    """Compare decision sequences field by field (times differ by delivery jitter; ignore them)."""
    got = [{k: getattr(d, k) for k in _COMPARED} for d in produced]
    problems = []
    for i in range(max(len(got), len(expected))):
        have = got[i] if i < len(got) else None
        want = expected[i] if i < len(expected) else None
        if have != want:
            problems.append(f"decision #{i}: recorded {want}, replayed {have}")
    return problems


def load_configs(path: str | None) -> ConfigSet | None:
    if path is None:
        return None
    return parse_configmap(configsource.file_data(Path(path).read_text()))


def run(args: argparse.Namespace) -> int:
    try:
        tick = config.duration(args.tick_interval)
        configs = load_configs(args.config)
        lines = list(normalize(Path(args.file).read_text().splitlines(), tick))
        script = replay.parse(lines)
        produced = replay.run_replay(lines, configs, mode=cast(ScalerMode, args.mode))
    except (OSError, ValueError, ConfigError, replay.ReplayError) as exc:
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
