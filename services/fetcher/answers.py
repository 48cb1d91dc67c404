"""Prometheus query answers, decoded: the body of ``/api/v1/query`` to the series a collection merges.

An answer is ``{"status": …, "data": {"resultType": "vector", "result": [series, …]}}`` and a series
``{"metric": {label: value, …}, "value": [time, "number"]}``. At 1,000 VAs a batched cycle reads about
27,500 series; decoded into dicts, they kept the garbage collector busy for about a quarter of the
cycle (docs/benchmarks.md, "The fetch cycle at 1,000 VAs and memory per VA"). So the fast path is one
msgspec decode into typed Structs the collector does not track (``gc=False``: they hold only strings
and numbers, so they cannot form a cycle), keeping only the labels a collection uses.

Every answer is untrusted. One the typed schema does not fit (a series of another shape, a label that is
not a string) is read again leniently: each series that does not fit is skipped on its own, and the
others count. A body that is not JSON, or not a query answer, is an :class:`AnswerError`.

Exceptions::

    ValueError
    └── AnswerError      ``.unreadable``: not JSON (a proxy's error page); else not a query answer
"""

from __future__ import annotations

import math
from typing import Any, Final

import msgspec


class AnswerError(ValueError):
    """A 200 answer that is not a query answer; ``unreadable`` when it is not JSON at all."""

    def __init__(self, message: str, *, unreadable: bool = False) -> None:
        super().__init__(message)
        self.unreadable = unreadable


class Labels(msgspec.Struct, frozen=True, gc=False):
    """The labels a collection reads (the others are skipped while decoding)."""

    namespace: str = ""
    pod: str = ""
    num_gpu_blocks: str | None = None  # vllm:cache_config_info only
    block_size: str | None = None
    target_model_name: str = ""  # the gateway's queue per model only


class Series(msgspec.Struct, frozen=True, gc=False):
    metric: Labels
    value: tuple[float, str] | None = None  # None: no usable sample (the pod is still seen)

    def number(self) -> float | None:
        """The sample's value; NaN when it is not a number (assemble() drops and counts it)."""
        if self.value is None:
            return None
        try:
            return float(self.value[1])
        except ValueError:
            return math.nan


class _Data(msgspec.Struct, gc=False):
    result: list[Series]


class _Answer(msgspec.Struct, gc=False):
    data: _Data


_typed: Final = msgspec.json.Decoder(_Answer)
_any: Final = msgspec.json.Decoder()


def series(body: bytes) -> list[Series]:
    """The series of a query answer (a label it does not have, or that is not a string in a series
    read leniently, is ""); :class:`AnswerError` if ``body`` is not a query answer."""
    try:
        return _typed.decode(body).data.result
    except msgspec.ValidationError:
        return _lenient(body)
    except msgspec.DecodeError:
        raise AnswerError("not JSON", unreadable=True) from None


def _lenient(body: bytes) -> list[Series]:
    try:
        document: Any = _any.decode(body)
    except msgspec.DecodeError:
        raise AnswerError("not JSON", unreadable=True) from None
    try:
        result = document["data"]["result"]
    except (KeyError, TypeError, IndexError):
        raise AnswerError("no data.result") from None
    if not isinstance(result, list):
        raise AnswerError(f"data.result is a {type(result).__name__}, not a list")
    found: list[Series] = []
    for one in result:
        labels = one.get("metric") if isinstance(one, dict) else None
        if not isinstance(labels, dict):
            continue
        found.append(
            Series(
                metric=Labels(
                    namespace=_text(labels.get("namespace")),
                    pod=_text(labels.get("pod")),
                    num_gpu_blocks=_label(labels.get("num_gpu_blocks")),
                    block_size=_label(labels.get("block_size")),
                    target_model_name=_text(labels.get("target_model_name")),
                ),
                value=_value(one.get("value")),
            )
        )
    return found


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _label(value: object) -> str | None:
    return None if value is None else str(value)


def _value(value: object) -> tuple[float, str] | None:
    """``[time, number]`` with the number as text (NaN when unreadable); None for another shape."""
    if not isinstance(value, list) or len(value) != 2:
        return None
    number = value[1]
    if isinstance(number, str):
        return (0.0, number)
    try:
        return (0.0, repr(float(number)))
    except (TypeError, ValueError, OverflowError):  # null, a list, an integer too large for a float
        return (0.0, "NaN")
