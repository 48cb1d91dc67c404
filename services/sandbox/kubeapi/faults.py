"""Fault injection and request accounting, programmable from tests (and from `/_emulator/`).

Rules match on a path regex (searched in the request path), a Kubernetes verb (get, list, watch,
create, update, patch, delete, deletecollection) and/or an HTTP method; unset parts match anything.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.sandbox.kubeapi.store import Store


@dataclass(kw_only=True)
class Match:
    path: str | None = None
    verb: str | None = None
    method: str | None = None
    _regex: re.Pattern[str] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._regex = re.compile(self.path) if self.path else None

    def matches(self, *, path: str, verb: str, method: str) -> bool:
        if self._regex is not None and not self._regex.search(path):
            return False
        if self.verb is not None and self.verb.lower() != verb:
            return False
        return self.method is None or self.method.upper() == method.upper()


RESET = 0  # a FailureRule with this status drops the connection instead of answering


@dataclass(kw_only=True)
class FailureRule:
    match: Match
    status: int
    remaining: int
    message: str
    retry_after: int | None = None
    fired: int = 0


@dataclass(kw_only=True)
class LatencyRule:
    match: Match
    seconds: float
    remaining: int | None  # None: every matching request


@dataclass(frozen=True)
class RequestRecord:
    verb: str
    pattern: str
    path: str
    method: str
    user_agent: str = ""  # who asked (wva's scaler says which replica: wva-scaler/<identity>)
    at: float = 0.0  # time.monotonic() when it arrived
    body: bytes = b""  # of a write, its first KiB


class Faults:
    def __init__(self, store: Store) -> None:
        self._store = store
        self.failures: list[FailureRule] = []
        self.latencies: list[LatencyRule] = []
        self.counts: Counter[tuple[str, str]] = Counter()
        self.requests: list[RequestRecord] = []

    def fail(
        self,
        status: int,
        *,
        times: int = 1,
        path: str | None = None,
        verb: str | None = None,
        method: str | None = None,
        message: str | None = None,
        retry_after: int | None = None,
    ) -> FailureRule:
        """Answer the next `times` matching requests with `status` (a Status body) instead of serving them."""
        rule = FailureRule(
            match=Match(path=path, verb=verb, method=method),
            status=status,
            remaining=times,
            message=message or f"injected fault: {status}",
            retry_after=retry_after if retry_after is not None else (1 if status == 429 else None),
        )
        self.failures.append(rule)
        return rule

    def reset(self, *, times: int = 1, path: str | None = None, verb: str | None = None) -> FailureRule:
        """Close the connection of the next `times` matching requests without answering (the client
        sees its library's own disconnect error, e.g. aiohttp's ServerDisconnectedError)."""
        rule = FailureRule(match=Match(path=path, verb=verb), status=RESET, remaining=times, message="connection reset")
        self.failures.append(rule)
        return rule

    def add_latency(
        self,
        seconds: float,
        *,
        path: str | None = None,
        verb: str | None = None,
        method: str | None = None,
        times: int | None = None,
    ) -> LatencyRule:
        rule = LatencyRule(match=Match(path=path, verb=verb, method=method), seconds=seconds, remaining=times)
        self.latencies.append(rule)
        return rule

    def drop_watches(self) -> int:
        """End every open watch stream (clients see EOF and must re-watch); returns how many."""
        return self._store.close_subscriptions(tag="watch")

    def compact(self) -> None:
        """Forget the change history, so a watch from any earlier resourceVersion gets 410 Expired."""
        self._store.compact()

    def clear(self) -> None:
        self.failures.clear()
        self.latencies.clear()

    def reset_counts(self) -> None:
        self.counts.clear()
        self.requests.clear()

    def count(self, verb: str | None = None, pattern: str | None = None) -> int:
        """Requests served so far with this verb and/or path pattern (regex searched in the pattern)."""
        regex = re.compile(pattern) if pattern else None
        return sum(
            n
            for (v, p), n in self.counts.items()
            if (verb is None or v == verb) and (regex is None or regex.search(p))
        )

    # ---- called by the server ------------------------------------------------------------------

    def record(
        self, *, verb: str, pattern: str, path: str, method: str, user_agent: str = "", body: bytes = b""
    ) -> None:
        self.counts[(verb, pattern)] += 1
        self.requests.append(RequestRecord(verb, pattern, path, method, user_agent, time.monotonic(), body[:1024]))

    def latency_for(self, *, path: str, verb: str, method: str) -> float:
        total = 0.0
        for rule in list(self.latencies):
            if rule.match.matches(path=path, verb=verb, method=method):
                total += rule.seconds
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        self.latencies.remove(rule)
        return total

    def failure_for(self, *, path: str, verb: str, method: str) -> FailureRule | None:
        for rule in self.failures:
            if rule.remaining > 0 and rule.match.matches(path=path, verb=verb, method=method):
                rule.remaining -= 1
                rule.fired += 1
                if rule.remaining == 0:
                    self.failures.remove(rule)
                return rule
        return None
