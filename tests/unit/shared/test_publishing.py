"""shared.publishing's guarantees, with a NATS connection that answers the attempts a test chooses as
JetStream would not (the real server's side is in tests/integration/shared/test_publishing.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import PubAck

from shared import messages, publishing

AT = datetime(2026, 1, 1, tzinfo=UTC)
LOST = "lost"  # no answer at all: an ack that never comes
NO_STREAM = "no stream"


class FlakyNats:
    """Stores what it is sent and acks it, except the attempts in ``fail`` ((subject, attempt number)
    -> LOST, NO_STREAM, or the error JetStream answers with); answers arrive after later messages."""

    def __init__(self, fail: dict[tuple[str, int], Any]) -> None:
        self.fail = fail
        self.attempts: dict[str, int] = {}
        self.stored: list[tuple[str, bytes]] = []
        self.ids: dict[bytes, list[str]] = {}
        self._reply: Callable[[Msg], Awaitable[None]] | None = None

    def new_inbox(self) -> str:
        return "_INBOX.test"

    async def subscribe(self, subject: str, cb: Callable[[Msg], Awaitable[None]]) -> None:
        assert subject == "_INBOX.test.*"
        self._reply = cb

    async def publish(self, subject: str, payload: bytes, *, reply: str, headers: dict[str, str]) -> None:
        n = self.attempts[subject] = self.attempts.get(subject, 0) + 1
        self.ids.setdefault(payload, []).append(headers["Nats-Msg-Id"])
        outcome = self.fail.get((subject, n))
        if outcome == LOST:
            return
        if outcome == NO_STREAM:
            answer = Msg(_client=None, subject=reply, data=b"", headers={"Status": "503"})  # type: ignore[arg-type]
        elif outcome is not None:
            answer = Msg(_client=None, subject=reply, data=json.dumps({"error": outcome}).encode())  # type: ignore[arg-type]
        else:
            self.stored.append((subject, payload))
            ack = {"stream": "S", "seq": len(self.stored)}
            answer = Msg(_client=None, subject=reply, data=json.dumps(ack).encode())  # type: ignore[arg-type]
        assert self._reply is not None
        asyncio.get_running_loop().call_later(0.001, lambda: asyncio.ensure_future(self._reply(answer)))  # type: ignore[misc]


def _invalidation(name: str, generation: int) -> messages.Invalidation:
    return messages.Invalidation(
        namespace="ns", name=name, at=AT, reason="relist", deployment_generation=generation
    )


async def test_a_message_that_fails_is_retried_with_its_id_before_the_next_of_its_subject() -> None:
    nc = FlakyNats({("a", 1): LOST})
    batch = [publishing.Outgoing(s, _invalidation(s, g)) for g in (1, 2) for s in ("a", "b")]
    outcomes = await publishing.publish_many(nc, batch, timeout=0.05)  # type: ignore[arg-type]
    assert all(isinstance(o, PubAck) for o in outcomes), outcomes
    stored = [(subject, messages.events_decoder.decode(p)) for subject, p in nc.stored]
    assert [
        m.deployment_generation for s, m in stored if s == "a" and isinstance(m, messages.Invalidation)
    ] == [1, 2]
    first = messages.encode(batch[0].message)
    assert len(nc.ids[first]) == 2 and len(set(nc.ids[first])) == 1  # the retry kept its Nats-Msg-Id


async def test_what_fails_for_good_is_returned_at_once_and_the_rest_stored() -> None:
    refused = {"code": 400, "err_code": 10054, "description": "message size exceeds maximum allowed"}
    nc = FlakyNats({("b", 1): refused, **{("c", n): NO_STREAM for n in range(1, 5)}})
    healed = []

    async def heal() -> None:
        healed.append(True)

    batch = [publishing.Outgoing(s, _invalidation(s, 1)) for s in ("a", "b", "c")]
    outcomes = await publishing.publish_many(nc, batch, heal=heal)  # type: ignore[arg-type]
    assert isinstance(outcomes[0], PubAck)
    assert isinstance(outcomes[1], nats.js.errors.BadRequestError) and nc.attempts["b"] == 1  # not retried
    assert isinstance(outcomes[2], nats.js.errors.NoStreamResponseError) and nc.attempts["c"] == 4
    assert len(healed) == 4  # before each retry, and after the last attempt for the next publish
    assert [s for s, _ in nc.stored] == ["a"]


async def test_an_ack_that_never_comes_is_a_timeout_after_the_last_attempt() -> None:
    nc = FlakyNats({("a", n): LOST for n in range(1, 3)})
    outcomes = await publishing.publish_many(
        nc, [publishing.Outgoing("a", _invalidation("a", 1))], attempts=2, timeout=0.02
    )  # type: ignore[arg-type]
    assert isinstance(outcomes[0], nats.errors.TimeoutError) and nc.attempts["a"] == 2 and nc.stored == []
