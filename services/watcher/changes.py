"""What changed between the last published target of a VA and its current one (pure).

Whether a new ``Target`` needs publishing at all is ``shared.messages.same_content`` (``at`` ignored).
:func:`reasons` names the invalidations the change implies (docs/design.md §5):

  ``va_deleted``        the VA is gone (or no longer managed by this installation)
  ``target_changed``    the VA's spec changed, it points at another Deployment, or its Deployment
                        appeared, disappeared or was re-created
  ``template_changed``  the same Deployment's pod template changed
  ``replicas_changed``  the same Deployment's spec replicas changed (whoever changed them)

A new VA implies none: nothing about it was cached. ``relist`` is not decided here; the reconciler adds
it for every VA after a re-list.
"""

from __future__ import annotations

from shared.messages import InvalidationReason, Target


def _spec(t: Target) -> tuple[object, ...]:
    return (t.model_id, t.variant_cost, t.min_replicas, t.max_replicas, t.scale_target, t.problems)


def reasons(old: Target | None, new: Target | None) -> tuple[InvalidationReason, ...]:
    if new is None:
        return ("va_deleted",) if old is not None else ()
    if old is None:
        return ()
    if (
        old.va_generation != new.va_generation
        or _spec(old) != _spec(new)
        or old.resolved != new.resolved
        # A re-created Deployment starts again at generation 1.
        or (new.resolved and new.deployment_generation < old.deployment_generation)
    ):
        return ("target_changed",)
    if not new.resolved:
        return ()
    found: list[InvalidationReason] = []
    if old.template_hash != new.template_hash:
        found.append("template_changed")
    if old.spec_replicas != new.spec_replicas:
        found.append("replicas_changed")
    return tuple(found)
