"""``wva record --out FILE``: write what wva saw and decided to a JSONL file that ``wva replay`` reads.

Each line is ``{"t": <seconds since the epoch, when NATS stored it>, "subject": …, "stream": "targets" |
"metrics" | "events", "seq": <its sequence in that stream>, "event": <payload>}``, in time order: the last target and snapshot of every VA, then invalidations, decisions and
ownership changes (which partitions each replica held, docs/design.md §11) from the event log
(``--since`` bounds how far back). Without ``--follow`` it stops once it has read everything
stored; with it, it keeps recording until interrupted or ``--duration`` passes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from nats.aio.msg import Msg

from services.tools import connection, subscription
from shared import messages, streams
from shared.intake import Intake
from shared.settings import Settings, duration
from shared.subjects import SubjectKind, Subjects

HELP = "record targets, snapshots, invalidations and decisions to a JSONL file for `wva replay`"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="JSONL file to write")
    parser.add_argument("--since", default="1h", help="how far back to read the event log (default 1h)")
    parser.add_argument("--follow", action="store_true", help="keep recording live messages")
    parser.add_argument("--duration", default="0", help="with --follow, stop after this long (0: until Ctrl-C)")
    connection.add_arguments(parser)


def line(msg: Msg, intake: Intake) -> dict[str, Any] | None:
    """The JSONL record of one stored message; None (counted, logged) when the services would reject it."""
    if intake.accept(msg.subject, msg.data, decoder=messages.any_decoder) is None:
        return None
    stream = msg.metadata.stream.rpartition("_")[2].lower()  # WVA_TARGETS -> targets
    return {
        "t": msg.metadata.timestamp.timestamp(),
        "subject": msg.subject,
        "stream": stream,
        "seq": msg.metadata.sequence.stream,
        "event": json.loads(msg.data),
    }


async def record(settings: Settings, out: Path, *, since: float, follow: bool, duration: float) -> int:
    subjects = Subjects(settings.subject_prefix)
    start = datetime.now(UTC) - timedelta(seconds=since)
    lines: list[dict[str, Any]] = []
    async with connection.connected(settings, "record") as nc:
        js = nc.jetstream()
        followers = [
            streams.Follower(js, subjects.wildcard(SubjectKind.TARGETS)),
            streams.Follower(js, subjects.wildcard(SubjectKind.METRICS)),
            streams.Follower(js, subjects.wildcard(SubjectKind.INVALIDATE), start="since", since=start),
            streams.Follower(js, subjects.wildcard(SubjectKind.DECISIONS), start="since", since=start),
            streams.Follower(js, subjects.wildcard(SubjectKind.OWNERS), start="since", since=start),
        ]

        intake = Intake(subjects)

        def keep(msg: Msg) -> None:
            entry = line(msg, intake)
            if entry is not None:
                lines.append(entry)

        # Interrupted (--follow until Ctrl-C): still write what was recorded.
        with contextlib.suppress(asyncio.CancelledError):
            async with subscription.warm(followers, keep):
                if follow:
                    await asyncio.sleep(duration) if duration > 0 else await asyncio.Event().wait()
    lines.sort(key=lambda entry: entry["t"])
    with out.open("w") as fh:
        for entry in lines:
            fh.write(json.dumps(entry, separators=(",", ":")) + "\n")
    print(f"recorded {len(lines)} messages to {out}", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    settings = connection.load_settings(args)
    if settings is None:
        return 2
    try:
        since, length = duration(args.since), duration(args.duration)
    except ValueError as exc:
        print(f"wva record: {exc}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(record(settings, Path(args.out), since=since, follow=args.follow, duration=length))
    return 130
