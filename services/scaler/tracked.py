"""What the scaler core keeps of a VA's ``Target``: the fields it decides from, in a smaller form.

A decoded ``Target`` holds its own copy of everything (its time, a ``PodRef`` per pod with phase and
address, the scale target's kind and API version, the Deployment's updated and available counts) and
the core reads a part of it. It keeps instead one :class:`Tracked` per VA (docs/benchmarks.md, "Memory
per tracked VA"): pod names in one tuple and the ready ones in another (the same tuple when all are
ready), repeated strings shared (``sys.intern``), and numbers many VAs have in common (bounds, costs)
as one object each.
"""

from __future__ import annotations

import sys
from typing import Any, Final

import msgspec

from shared.interning import Interner
from shared.messages import Problem, Target

# One object for equal numbers of the same type (a fleet has a handful of bounds and costs); 0.0 and
# -0.0 are equal, yet each is kept as it came.
_shared: Final[Interner[Any]] = Interner(keep=lambda value: not value)


class Tracked(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The fields of a ``Target`` the core reads, with the same names (and values)."""

    namespace: str
    name: str
    model_id: str
    variant_cost: float
    accelerator: str
    min_replicas: int
    max_replicas: int | None
    scale_kind: str  # the scale target's kind ("Deployment")
    scale_name: str  # the scale target's name; "" when the VA names none
    resolved: bool
    deployment_generation: int
    template_hash: str
    spec_replicas: int
    ready_replicas: int
    pods: tuple[str, ...]  # the Deployment's pods, by name
    ready: tuple[str, ...]  # those that are ready (``pods`` itself when all are)
    va_generation: int
    paused: bool
    dry_run: bool
    problems: tuple[Problem, ...]

    @property
    def deployment(self) -> str:
        """The name of the Deployment the VA scales."""
        return self.scale_name or self.name


def tracked(target: Target) -> Tracked:
    name = target.name
    pods = tuple(p.name for p in target.pods)
    ready = tuple(p.name for p in target.pods if p.ready)
    st = target.scale_target
    return Tracked(
        namespace=sys.intern(target.namespace),
        name=name,
        model_id=sys.intern(target.model_id),
        variant_cost=_shared(target.variant_cost),
        accelerator=sys.intern(target.accelerator),
        min_replicas=_shared(target.min_replicas),
        max_replicas=None if target.max_replicas is None else _shared(target.max_replicas),
        scale_kind=sys.intern(st.kind),
        scale_name=name if st.name == name else st.name,
        resolved=target.resolved,
        deployment_generation=target.deployment_generation,
        template_hash=target.template_hash,
        spec_replicas=target.spec_replicas,
        ready_replicas=target.ready_replicas,
        pods=pods,
        ready=pods if len(ready) == len(pods) else ready,
        va_generation=target.va_generation,
        paused=target.paused,
        dry_run=target.dry_run,
        problems=target.problems,
    )
