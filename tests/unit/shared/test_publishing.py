"""natsio.publish_many's guarantees, with a JetStream that fails the attempts a test chooses (the real
server's side is in tests/integration/shared/test_publishing.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import nats.errors
import nats.js.errors
import pytest
from nats.js.api import PubAck

from shared import messages, natsio

AT = datetime(2026, 1, 1, tzinfo=UTC)


class FlakyJetStream:
    """Stores what it is sent; ``fail`` maps (subject, attempt number) to the error that attempt gets,
    after a delay that lets later messages of the batch overtake it."""

    def __init__(self, fail: dict[tuple[str, int], Exception]) -> None:
        self.fail = fail
        self.attempts: dict[str, int] = {}
        self.stored: list[tuple[str, bytes]] = []
        self.ids: dict[bytes, list[str]] = {}

    async def publish(self, subject: str, payload: bytes, **kwargs: Any) -> PubAck:
        n = self.attempts[subject] = self.attempts.get(subject, 0) + 1
        self.ids.setdefault(payload, []).append(kwargs["headers"]["Nats-Msg-Id"])
        error = self.fail.get((subject, n))
        if error is not None:
            await asyncio.sleep(0.01)
            raise error
        self.stored.append((subject, payload))
        return PubAck(stream="S", seq=len(self.stored))


def _invalidation(name: str, generation: int) -> messages.Invalidation:
    return messages.Invalidation(namespace="ns", name=name, at=AT, reason="relist", deployment_generation=generation)


async def test_a_message_that_fails_is_retried_with_its_id_before_the_next_of_its_subject() -> None:
    js = FlakyJetStream({("a", 1): nats.errors.TimeoutError()})
    batch = [natsio.Outgoing(s, _invalidation(s, g)) for g in (1, 2) for s in ("a", "b")]
    outcomes = await natsio.publish_many(js, batch)  # type: ignore[arg-type]
    assert all(isinstance(o, PubAck) for o in outcomes)
    stored = [(subject, messages.events_decoder.decode(p).deployment_generation) for subject, p in js.stored]  # type: ignore[union-attr]
    assert [g for s, g in stored if s == "a"] == [1, 2]  # generation 1 was retried, yet 2 is the last stored
    first = messages.encode(batch[0].message)
    assert len(js.ids[first]) == 2 and len(set(js.ids[first])) == 1  # the retry kept its Nats-Msg-Id


async def test_what_fails_for_good_is_returned_and_the_rest_stored() -> None:
    refused = nats.js.errors.BadRequestError(code=400, description="message size exceeds maximum allowed")
    js = FlakyJetStream(
        {("b", 1): refused, **{("c", n): nats.js.errors.NoStreamResponseError() for n in range(1, 5)}}
    )
    healed = []

    async def heal() -> None:
        healed.append(True)

    batch = [natsio.Outgoing(s, _invalidation(s, 1)) for s in ("a", "b", "c")]
    outcomes = await natsio.publish_many(js, batch, heal=heal)  # type: ignore[arg-type]
    assert isinstance(outcomes[0], PubAck)
    assert outcomes[1] is refused and js.attempts["b"] == 1  # not worth another attempt
    assert isinstance(outcomes[2], nats.js.errors.NoStreamResponseError) and js.attempts["c"] == 4
    assert len(healed) == 4  # before each retry, and after the last attempt for the next publish
    assert [s for s, _ in js.stored] == ["a"]


async def test_publish_raises_what_its_message_failed_with() -> None:
    js = FlakyJetStream({("a", n): nats.errors.TimeoutError() for n in range(1, 3)})
    with pytest.raises(nats.errors.TimeoutError):
        await natsio.publish(js, "a", _invalidation("a", 1), attempts=2)  # type: ignore[arg-type]
    assert isinstance(await natsio.publish(js, "a", _invalidation("a", 1)), PubAck)  # type: ignore[arg-type]
