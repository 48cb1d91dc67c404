"""Untrusted messages in: the one rule every consumer of a wva subject follows (docs/design.md §3).

Anyone allowed to publish on a wva subject can send anything, so a consumer takes a message only when

1. its subject is one ``shared.subjects`` could have built (``invalid_subject``),
2. the payload decodes (``shared.messages.Decoder``: size, depth, kinds, names, figures, time zones),
3. its kind is one that subject carries (``wrong_subject``: a decision on ``wva.invalidate.…``), and
4. its namespace and name are the ones the subject names (``subject_mismatch``), so a payload can
   never speak for another VA than the subject it came on.

:func:`check` applies the rule and raises :class:`shared.messages.MessageError`. :class:`Intake` is what
services use: it returns the message, or counts the rejection in
``wva_messages_rejected_total{subject_kind,reason}``, logs it — one warning per subject kind per
interval, with the number suppressed since the last one, so a flood of bad messages cannot flood the
log — and returns ``None``; the consumer goes on with the next message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar

from shared import messages
from shared.messages import Decoder, MessageError
from shared.observability import count_rejected
from shared.subjects import SubjectError, SubjectKind, Subjects

log = logging.getLogger("wva.intake")

LOG_INTERVAL: Final = 60.0
"""Seconds between two warnings about rejected messages of one subject kind."""

UNKNOWN_KIND: Final = "unknown"
"""The ``subject_kind`` label of a subject that is not ``<prefix>.<kind>.…`` at all."""


class _Addressed(Protocol):
    @property
    def namespace(self) -> str: ...

    @property
    def name(self) -> str: ...


A = TypeVar("A", bound=_Addressed)


def check(subjects: Subjects, subject: str, data: bytes | memoryview, *, decoder: Decoder[A]) -> A:
    """The message ``data`` carries on ``subject``; :class:`MessageError` when the rule above refuses it."""
    try:
        ref = subjects.parse(subject)
    except SubjectError as exc:
        raise MessageError("invalid_subject", str(exc)) from None
    message = decoder.decode(data)
    kind = messages.kind_of(message)  # type: ignore[arg-type]  # every decoder yields Structs
    if kind not in messages.KINDS_ON[ref.kind]:
        raise MessageError("wrong_subject", f"a {kind} message on a {ref.kind.value} subject")
    if message.namespace != ref.namespace or message.name != ref.name:
        raise MessageError(
            "subject_mismatch",
            f"payload names {message.namespace}/{message.name}, the subject {ref.namespace}/{ref.name}",
        )
    return message


@dataclass(slots=True)
class _Reports:
    next_at: float = float("-inf")
    suppressed: int = 0


class Intake:
    """Decode, check, count and log: one per service (its log rate limit is per subject kind)."""

    def __init__(
        self,
        subjects: Subjects,
        *,
        log_interval: float = LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.subjects = subjects
        self._interval = log_interval
        self._clock = clock
        self._reports: dict[str, _Reports] = {}

    def accept(self, subject: str, data: bytes | memoryview, *, decoder: Decoder[A]) -> A | None:
        """The message, or ``None`` once the rejection is counted (and logged, rate-limited)."""
        try:
            return check(self.subjects, subject, data, decoder=decoder)
        except MessageError as exc:
            self.reject(subject, exc)
            return None

    def reject(self, subject: str, exc: MessageError) -> None:
        """Count and log a rejection found elsewhere (e.g. a request whose subject cannot be parsed)."""
        kind = self.subject_kind(subject)
        count_rejected(kind, exc.reason)
        reports = self._reports.setdefault(kind, _Reports())
        now = self._clock()
        if now < reports.next_at:
            reports.suppressed += 1
            return
        log.warning(
            "rejected a message on %s: %s%s",
            _shown(subject),
            exc,
            f" ({reports.suppressed} more rejected on {kind} subjects since the last report)"
            if reports.suppressed
            else "",
            extra={"subject_kind": kind, "reason": exc.reason, "suppressed": reports.suppressed},
        )
        reports.next_at, reports.suppressed = now + self._interval, 0

    def subject_kind(self, subject: str) -> str:
        """The ``subject_kind`` label: a :class:`SubjectKind` value, or ``unknown`` (bounded values)."""
        head = self.subjects.prefix + "."
        token = subject[len(head) :].split(".", 1)[0] if subject.startswith(head) else ""
        return token if token in _KINDS else UNKNOWN_KIND


_KINDS: Final = frozenset(k.value for k in SubjectKind)


def _shown(subject: str) -> str:
    return repr(subject) if len(subject) <= 120 else repr(subject[:120]) + "…"
