"""``wva tail [SUBJECT]``: print wva's messages as they arrive, one readable line each.

Watches ``<prefix>.>`` by default. ``--last`` starts with the last value of every stored subject
(targets, metrics) and the retained events, then follows live. ``--json`` prints raw payloads.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import TextIO

from services.tools import connection, formatting, subscription
from shared.settings import Settings
from shared.subjects import Subjects

HELP = "print wva's NATS messages as they arrive, one readable line each"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("subject", nargs="?", help="subject filter (default <prefix>.>)")
    parser.add_argument("--json", action="store_true", help="print raw JSON payloads")
    parser.add_argument("--last", action="store_true", help="start from the last value per subject")
    parser.add_argument("--count", type=int, default=0, help="exit after this many messages (0: never)")
    connection.add_arguments(parser)


async def tail(
    settings: Settings, subject: str | None, *, raw: bool, last: bool, count: int = 0, out: TextIO = sys.stdout
) -> int:
    subjects = Subjects(settings.subject_prefix)
    subject = subject or subjects.wildcard()
    seen = 0
    # aclosing: stop the followers before the connection closes, not whenever GC gets to them.
    async with (
        connection.connected(settings, "tail") as nc,
        contextlib.aclosing(subscription.messages(nc, subjects, subject, last=last)) as incoming,
    ):
        async for msg in incoming:
            line = (
                msg.data.decode(errors="replace")
                if raw
                else formatting.format_line(msg.subject, msg.data, subjects=subjects)
            )
            print(line, file=out, flush=True)
            seen += 1
            if count and seen >= count:
                break
    return 0


def run(args: argparse.Namespace) -> int:
    settings = connection.load_settings(args)
    if settings is None:
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(tail(settings, args.subject, raw=args.json, last=args.last, count=args.count))
    return 130
