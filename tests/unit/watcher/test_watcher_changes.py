"""Which invalidations a change implies, and when a target needs publishing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from services.watcher import changes
from shared import messages
from shared.messages import PodRef, Problem, ScaleTarget, Target

AT = datetime(2025, 1, 1, tzinfo=UTC)


def target(**fields: Any) -> Target:
    base: dict[str, Any] = {
        "namespace": "llm",
        "name": "v",
        "at": AT,
        "model_id": "m",
        "scale_target": ScaleTarget(kind="Deployment", name="d"),
        "resolved": True,
        "deployment_generation": 3,
        "template_hash": "aaa",
        "spec_replicas": 2,
        "va_generation": 1,
    }
    return Target(**{**base, **fields})


def test_identical_content_at_another_time_is_the_same() -> None:
    assert messages.same_content(target(), target(at=AT + timedelta(seconds=30)))
    assert not messages.same_content(target(), target(ready_replicas=1))
    assert not messages.same_content(None, target())
    assert messages.same_content(None, None)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (None, None, ()),
        (None, target(), ()),  # a new VA: nothing about it was cached
        (target(), None, ("va_deleted",)),
        (target(), target(ready_replicas=2, pods=(PodRef(name="p"),)), ()),  # status only
        (target(), target(deployment_generation=4, spec_replicas=3), ("replicas_changed",)),
        (target(), target(deployment_generation=4, template_hash="bbb"), ("template_changed",)),
        (target(), target(template_hash="bbb", spec_replicas=5), ("template_changed", "replicas_changed")),
        (target(), target(va_generation=2, variant_cost=3.0), ("target_changed",)),
        (target(), target(scale_target=ScaleTarget(kind="Deployment", name="e")), ("target_changed",)),
        (target(), target(resolved=False, template_hash="", spec_replicas=0), ("target_changed",)),
        (target(resolved=False, template_hash="", spec_replicas=0), target(), ("target_changed",)),
        (target(), target(deployment_generation=1), ("target_changed",)),  # the Deployment was re-created
        (target(), target(problems=(Problem(field="spec.modelID", message="x"),)), ("target_changed",)),
        # Labels and annotations are not spec: the target changes, nothing is invalidated.
        (target(), target(accelerator="H100", paused=True), ()),
        (target(resolved=False, spec_replicas=0), target(resolved=False, spec_replicas=0, model_id="m"), ()),
    ],
)
def test_reasons(old: Target | None, new: Target | None, expected: tuple[str, ...]) -> None:
    assert changes.reasons(old, new) == expected


def test_reasons_ignore_at_and_survive_a_round_trip() -> None:
    old = target()
    decoded = msgspec.json.decode(msgspec.json.encode(old), type=Target)
    assert changes.reasons(decoded, target(at=AT + timedelta(hours=1))) == ()
    assert messages.same_content(decoded, old)
