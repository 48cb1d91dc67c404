"""``wva tail [SUBJECT]``: print wva's messages as they arrive, one readable line each.

Watches ``<prefix>.>`` by default. ``--last`` starts with the last value of every stored subject
(targets, metrics) and the retained events, then follows live. ``--json`` prints raw payloads.
``--leases`` follows the lease bucket instead (docs/design.md §11): who holds which partition now,
then every lease taken, renewed by another holder or given back (a lease that expires leaves no trace
in the bucket; the ``wva.owners.>`` messages say what each replica holds).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import TextIO

import nats.js.errors

from services.tools import connection, formatting, subscription
from shared.leasestore import decode_value
from shared.lifecycle import leases_bucket
from shared.settings import Settings
from shared.subjects import Subjects

HELP = "print wva's NATS messages as they arrive, one readable line each"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("subject", nargs="?", help="subject filter (default <prefix>.>)")
    parser.add_argument("--json", action="store_true", help="print raw JSON payloads")
    parser.add_argument("--last", action="store_true", help="start from the last value per subject")
    parser.add_argument("--count", type=int, default=0, help="exit after this many messages (0: never)")
    parser.add_argument("--leases", action="store_true", help="follow the lease bucket (WVA_LEASES) instead")
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


async def tail_leases(settings: Settings, *, count: int = 0, out: TextIO = sys.stdout) -> int:
    """Every lease as it is now, then every change, one line each (renewals by the same holder skipped)."""
    bucket = leases_bucket(settings, Subjects(settings.subject_prefix))
    seen, shown = 0, dict[str, tuple[str | None, bool]]()
    async with connection.connected(settings, "tail") as nc:
        try:
            kv = await nc.jetstream().key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            print(
                f"wva tail: no lease bucket {bucket} (no replica runs with WVA_LEASE_BACKEND=nats; with kubernetes: "
                "kubectl get leases -l app.kubernetes.io/part-of=wva)", file=sys.stderr,
            )
            return 1
        watcher = await kv.watchall()
        try:
            async for entry in watcher:
                if entry is None:
                    continue
                deleted = entry.operation is not None
                holder = None if deleted else decode_value(entry.value)
                if shown.get(entry.key) == (holder, deleted):
                    continue  # a renewal
                shown[entry.key] = (holder, deleted)
                print(formatting.lease_line(entry.key, holder, entry.revision or 0, deleted=deleted), file=out, flush=True)
                seen += 1
                if count and seen >= count:
                    break
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]  # nats-py leaves it untyped
    return 0


def run(args: argparse.Namespace) -> int:
    settings = connection.load_settings(args)
    if settings is None:
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        if args.leases:
            return asyncio.run(tail_leases(settings, count=args.count))
        return asyncio.run(tail(settings, args.subject, raw=args.json, last=args.last, count=args.count))
    return 130
