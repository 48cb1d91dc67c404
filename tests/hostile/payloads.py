"""Seeded hostile payloads for the fuzz runs: every one is something a service must reject.

``generate(seed, n, kinds)`` returns ``n`` ``Payload``s (subject, bytes, category) spread over the
subject kinds given, in a fixed order for a given seed. Categories: random bytes, deep nesting in
arrays and in objects, huge strings (over the 1 MiB limit, and names far over Kubernetes' length),
wrong kinds, wrong types, non-finite and negative figures, payloads for another VA than their subject,
unicode and other invalid names (in the payload, or in the subject), naive timestamps, and truncated
JSON. None of them is a message any service may act on, so every one must be counted as rejected.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from shared.subjects import SubjectKind

AT: Final = "2026-01-02T03:04:05Z"
KIND_OF: Final = {
    SubjectKind.TARGETS: "target.v1",
    SubjectKind.METRICS: "metrics.v1",
    SubjectKind.INVALIDATE: "invalidation.v1",
    SubjectKind.FETCH: "fetch.v1",
}
UNICODE_NAMES: Final = ("llämä", "модель", "模型", "🦙", "ﬁ", "a\u200bb", "Ⅻ", "x\u0301")


@dataclass(frozen=True, slots=True)
class Payload:
    subject: str
    data: bytes
    category: str


def _valid(kind: SubjectKind, namespace: str, name: str) -> dict[str, Any]:
    """A message that would be accepted on ``kind``'s subject for namespace/name."""
    base: dict[str, Any] = {"kind": KIND_OF[kind], "namespace": namespace, "name": name, "at": AT}
    if kind is SubjectKind.METRICS:
        base |= {"collected_at": AT, "replicas": [{"pod": f"{name}-0", "kv_cache_usage": 0.5}]}
    elif kind is SubjectKind.INVALIDATE:
        base |= {"reason": "relist", "deployment_generation": 2}
    elif kind is SubjectKind.TARGETS:
        base |= {"model_id": "m", "spec_replicas": 1, "pods": [{"name": f"{name}-0", "address": "10.0.0.1:8000"}]}
    return base


def _dump(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


class _Generator:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.serial = 0

    def va(self) -> tuple[str, str]:
        # Every payload gets a subject of its own: on a last-value stream a second message on a subject
        # can replace the first before a consumer reads it, and the run must account for every payload.
        self.serial += 1
        return f"fz-{self.rng.randrange(20)}", f"va-{self.serial}.x{self.rng.randrange(3)}"

    def subject(self, kind: SubjectKind, namespace: str, name: str) -> str:
        return f"wva.{kind.value}.{namespace}.{name.replace('.', '_')}"

    # Each category: (subject kind, namespace, name) -> (subject, bytes).

    def random_bytes(self, kind: SubjectKind, ns: str, name: str) -> tuple[str, bytes]:
        data = bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(1, 300)))
        if data[:1] == b"{":
            data = b"\xff" + data
        return self.subject(kind, ns, name), data

    def deep(self, kind: SubjectKind, ns: str, name: str, *, objects: bool) -> tuple[str, bytes]:
        depth = self.rng.randrange(1100, 6000)
        nest = (b'{"a":' * depth + b"1" + b"}" * depth) if objects else (b"[" * depth + b"]" * depth)
        head = _dump(_valid(kind, ns, name))[:-1]
        where = self.rng.choice(["tail", "head", "bare"])
        if where == "tail":
            return self.subject(kind, ns, name), head + b',"x":' + nest + b"}"
        if where == "head":
            return self.subject(kind, ns, name), b'{"x":' + nest + b"," + head[1:] + b"}"
        return self.subject(kind, ns, name), nest

    def huge(self, kind: SubjectKind, ns: str, name: str) -> tuple[str, bytes]:
        message = _valid(kind, ns, name)
        if self.rng.random() < 0.02:  # over the services' 1 MiB limit (the test server allows 8 MiB)
            message["padding"] = "x" * (1_100_000 + self.rng.randrange(100_000))
        else:
            message["name"] = "a" * self.rng.randrange(254, 20_000)  # a name far over 253 characters
        return self.subject(kind, ns, name), _dump(message)

    def wrong_kind(self, kind: SubjectKind, ns: str, name: str) -> tuple[str, bytes]:
        message = _valid(kind, ns, name)
        others = [k for k in ("target.v1", "metrics.v1", "decision.v1", "target.v9", "", "nope", 7) if k != message["kind"]]
        message["kind"] = self.rng.choice(others)
        if message["kind"] == "decision.v1":
            message |= {"current": 1, "desired": 2, "reason": "x"}  # a valid decision: on the wrong subject
        return self.subject(kind, ns, name), _dump(message)

    def wrong_types(self, kind: SubjectKind, ns: str, name: str) -> tuple[str, bytes]:
        message = _valid(kind, ns, name)
        field = self.rng.choice([k for k in message if k != "kind"])
        current = message[field]
        # A value of another JSON type than the field's (a bool is not a number here, nor 1.5 a count).
        wrong: list[Any] = [{"a": [1]}, [1, "x"], True]
        wrong += [] if isinstance(current, str) else ["text"]
        wrong += [] if isinstance(current, int) else [123]
        wrong += [1.5] if isinstance(current, int | str) else []
        message[field] = self.rng.choice(wrong)
        return self.subject(kind, ns, name), _dump(message)

    def non_finite(self, kind: SubjectKind, ns: str, name: str) -> tuple[str, bytes]:
        message = _valid(kind, ns, name)
        bad = self.rng.choice(["1e999", "-1e999", "NaN", "Infinity", "-1", "-0.5"])
        if kind is SubjectKind.METRICS:
            message["replicas"][0]["kv_cache_usage"] = "@@"
        elif kind is SubjectKind.TARGETS:
            message["variant_cost"] = "@@"
        elif kind is SubjectKind.INVALIDATE:
            message["deployment_generation"] = "@@"
            bad = self.rng.choice(["1e999", "-1", "NaN", "-7"])
        else:
            message["at"] = "@@"
        return self.subject(kind, ns, name), _dump(message).replace(b'"@@"', bad.encode())

    def mismatched(self, kind: SubjectKind, ns: str, name: str) -> tuple[str, bytes]:
        other_ns, other_name = self.va()
        if (other_ns, other_name) == (ns, name):
            other_name += "-other"
        return self.subject(kind, ns, name), _dump(_valid(kind, other_ns, other_name))

    def unicode_name(self, kind: SubjectKind, ns: str, name: str) -> tuple[str, bytes]:
        bad = f"{self.rng.choice(UNICODE_NAMES)}{self.serial}"
        if self.rng.random() < 0.5:  # in the payload only
            return self.subject(kind, ns, name), _dump(_valid(kind, ns, bad))
        return f"wva.{kind.value}.{ns}.{bad}", _dump(_valid(kind, ns, bad))  # in the subject too

    def invalid_name(self, kind: SubjectKind, ns: str, name: str) -> tuple[str, bytes]:
        n = self.serial
        bad = self.rng.choice([f"Bad_Name{n}", f"UPPER{n}", f"-lead{n}", f"trail{n}-", "a..b", "with space", "x\n", "*", ""])
        field = self.rng.choice(["namespace", "name"])
        message = _valid(kind, ns, name)
        message[field] = bad
        if self.rng.random() < 0.3 and bad and all(c not in bad for c in " \n*."):
            token_ns, token_name = (bad, name) if field == "namespace" else (ns, bad)
            return f"wva.{kind.value}.{token_ns}.{token_name.replace('.', '_')}", _dump(message)
        return self.subject(kind, ns, name), _dump(message)

    def naive_time(self, kind: SubjectKind, ns: str, name: str) -> tuple[str, bytes]:
        message = _valid(kind, ns, name)
        message["at"] = self.rng.choice(["2026-01-02T03:04:05", "yesterday", "2026-13-45T99:99:99Z", "0"])
        return self.subject(kind, ns, name), _dump(message)

    def truncated(self, kind: SubjectKind, ns: str, name: str) -> tuple[str, bytes]:
        data = _dump(_valid(kind, ns, name))
        return self.subject(kind, ns, name), data[: self.rng.randrange(1, len(data) - 1)]


CATEGORIES: Final[dict[str, Callable[[_Generator, SubjectKind, str, str], tuple[str, bytes]]]] = {
    "random_bytes": _Generator.random_bytes,
    "deep_arrays": lambda g, k, ns, n: g.deep(k, ns, n, objects=False),
    "deep_objects": lambda g, k, ns, n: g.deep(k, ns, n, objects=True),
    "huge": _Generator.huge,
    "wrong_kind": _Generator.wrong_kind,
    "wrong_types": _Generator.wrong_types,
    "non_finite": _Generator.non_finite,
    "mismatched_subject": _Generator.mismatched,
    "unicode_names": _Generator.unicode_name,
    "invalid_names": _Generator.invalid_name,
    "naive_time": _Generator.naive_time,
    "truncated": _Generator.truncated,
}


def generate(seed: int, n: int, kinds: list[SubjectKind]) -> list[Payload]:
    g = _Generator(seed)
    names = list(CATEGORIES)
    out = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        category = names[(i // len(kinds)) % len(names)]
        ns, name = g.va()
        subject, data = CATEGORIES[category](g, kind, ns, name)
        out.append(Payload(subject=subject, data=data, category=category))
    return out
