"""One readable line per message, for ``wva tail`` and logs of the sandbox (pure)."""

from __future__ import annotations

from datetime import datetime

from shared import intake
from shared import messages as m
from shared.subjects import Subjects

_DEFAULT_SUBJECTS = Subjects()


def _num(value: float | None, fmt: str = ".2f") -> str:
    return "-" if value is None else format(value, fmt)


def _when(at: datetime) -> str:
    return at.strftime("%H:%M:%S.%f")[:-3]


def describe(message: m.AnyMessage) -> str:
    """The fields a person looks at first, as ``key=value`` pairs."""
    match message:
        case m.Target():
            replicas = f"{message.ready_replicas}/{message.spec_replicas}"
            bounds = f"{message.min_replicas}..{'' if message.max_replicas is None else message.max_replicas}"
            text = (
                f"model={message.model_id} cost={message.variant_cost:g} acc={message.accelerator or '-'} "
                f"ready/spec={replicas} bounds={bounds} pods={len(message.pods)} gen={message.deployment_generation}"
            )
            if not message.resolved:
                text += " UNRESOLVED"
            if message.paused:
                text += " paused"
            if message.problems:
                text += " problems=" + "; ".join(f"{p.field}: {p.message}" for p in message.problems)
            return text
        case m.MetricsSnapshot():
            kv = ",".join(_num(r.kv_cache_usage) for r in message.replicas)
            queue = ",".join(_num(r.waiting, "g") for r in message.replicas)
            a = message.allocation
            text = (
                f"status={message.status} replicas={len(message.replicas)} kv=[{kv}] waiting=[{queue}] "
                f"rate={_num(a.arrival_rate)}rps ttft={_num(a.ttft_seconds, '.3f')}s "
                f"collected={_when(message.collected_at)}"
            )
            if message.reason:
                text += f" reason={message.reason!r}"
            return text
        case m.Invalidation():
            return f"reason={message.reason} generation={message.deployment_generation}"
        case m.Decision():
            arrow = f"{message.current}->{message.desired}"
            applied = "applied" if message.applied else "not-applied"
            return f"{arrow} {message.reason} {applied} mode={message.mode} {message.detail}".rstrip()
        case m.FetchRequest():
            return "fresh" if message.fresh else "cached-ok"
        case m.Ownership():
            held = ",".join(message.owned) or "none"
            return f"service={message.namespace} replica={message.name} holds={held} of={message.partitions}"
        case m.TargetDeleted() | m.MetricsDeleted():
            return "deleted"
    return ""  # pragma: no cover - the match above is exhaustive over AnyMessage


def lease_line(key: str, holder: str | None, revision: int, *, deleted: bool = False) -> str:
    """One change in the lease bucket: ``lease <service>.<partition> = <replica>`` (or given back)."""
    if deleted:
        return f"lease {key} given back (rev {revision})"
    return f"lease {key} = {holder if holder is not None else '<not a replica identity>'} (rev {revision})"


def format_line(subject: str, data: bytes, *, subjects: Subjects = _DEFAULT_SUBJECTS) -> str:
    """``HH:MM:SS.mmm <subject> <kind> <fields>``; a payload the services would reject (undecodable, or
    not matching its subject: ``shared.intake``) is shown with the reason, not hidden."""
    try:
        message = intake.check(subjects, subject, data, decoder=m.any_decoder)
    except m.MessageError as exc:
        return f"{'-' * 12} {subject} ! {exc.reason}: {bytes(data[:80])!r}"
    return f"{_when(message.at)} {subject} {m.kind_of(message)} {describe(message)}"
