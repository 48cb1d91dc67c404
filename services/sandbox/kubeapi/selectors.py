"""Label and field selectors: the string grammar clients send, and matching objects against it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_KEY = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_./]*)?[A-Za-z0-9]$")
_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_SET_BASED = re.compile(r"^(?P<key>\S+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")


class SelectorError(ValueError):
    pass


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and labels[self.key] in self.values
        # "!=" and "notin" match objects without the label too, as in Kubernetes.
        return not present or labels[self.key] not in self.values


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        actual = labels or {}
        return all(r.matches(actual) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements


def _split_top_level(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f"unbalanced parentheses in {text!r}")
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth:
        raise SelectorError(f"unbalanced parentheses in {text!r}")
    parts.append("".join(current))
    return parts


def _key(raw: str) -> str:
    key = raw.strip()
    if not _KEY.match(key):
        raise SelectorError(f"invalid label key {key!r}")
    return key


def _value(raw: str) -> str:
    value = raw.strip()
    if not _VALUE.match(value) or len(value) > 63:
        raise SelectorError(f"invalid label value {value!r}")
    return value


def _requirement(part: str) -> Requirement:
    if part.startswith("!"):
        return Requirement(_key(part[1:]), "!")
    if m := _SET_BASED.match(part):
        values = frozenset(_value(v) for v in m["values"].split(","))
        return Requirement(_key(m["key"]), m["op"], values)
    for op, canonical in (("!=", "!="), ("==", "="), ("=", "=")):
        if op in part:
            key, _, value = part.partition(op)
            return Requirement(_key(key), canonical, frozenset({_value(value)}))
    return Requirement(_key(part), "exists")


def parse_label_selector(text: str | None) -> LabelSelector:
    if not text or not text.strip():
        return LabelSelector()
    reqs = []
    for part in _split_top_level(text):
        stripped = part.strip()
        if not stripped:
            raise SelectorError(f"empty requirement in {text!r}")
        reqs.append(_requirement(stripped))
    return LabelSelector(tuple(reqs))


def from_label_selector_object(selector: Mapping[str, Any] | None) -> LabelSelector:
    """A metav1.LabelSelector (matchLabels/matchExpressions), as in a Deployment's spec."""
    if not selector:
        return LabelSelector()
    reqs = [Requirement(k, "=", frozenset({str(v)})) for k, v in (selector.get("matchLabels") or {}).items()]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expr in selector.get("matchExpressions") or []:
        op = ops.get(expr.get("operator", ""))
        if op is None:
            raise SelectorError(f"unknown operator {expr.get('operator')!r}")
        reqs.append(Requirement(expr["key"], op, frozenset(expr.get("values") or ())))
    return LabelSelector(tuple(reqs))


def to_string(selector: LabelSelector) -> str:
    """The string form the scale subresource reports in status.selector."""
    out = []
    for r in selector.requirements:
        if r.op == "exists":
            out.append(r.key)
        elif r.op == "!":
            out.append(f"!{r.key}")
        elif r.op in ("=", "!=") and len(r.values) == 1:
            out.append(f"{r.key}{r.op}{next(iter(r.values))}")
        else:
            out.append(f"{r.key} {r.op} ({','.join(sorted(r.values))})")
    return ",".join(out)


@dataclass(frozen=True)
class FieldRequirement:
    path: tuple[str, ...]
    value: str
    negated: bool

    def matches(self, obj: Mapping[str, Any]) -> bool:
        current: Any = obj
        for step in self.path:
            current = current.get(step) if isinstance(current, Mapping) else None
        actual = "" if current is None else str(current)
        return (actual == self.value) != self.negated


@dataclass(frozen=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return all(r.matches(obj) for r in self.requirements)


def parse_field_selector(text: str | None) -> FieldSelector:
    """`metadata.name=x,metadata.namespace!=y`; any dotted path works, unlike the real server's allow-list."""
    if not text or not text.strip():
        return FieldSelector()
    reqs = []
    for part in text.split(","):
        for op, negated in (("!=", True), ("==", False), ("=", False)):
            if op in part:
                path, _, value = part.partition(op)
                reqs.append(FieldRequirement(tuple(path.strip().split(".")), value.strip(), negated))
                break
        else:
            raise SelectorError(f"invalid field selector requirement {part!r}")
    return FieldSelector(tuple(reqs))
