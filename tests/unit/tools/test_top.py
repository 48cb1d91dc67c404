"""`wva top` on narrow and wide terminals: the least useful columns go first, numbers stay whole."""

from __future__ import annotations

from datetime import UTC, datetime

from services.tools import top
from shared import messages as m

AT = datetime(2026, 1, 1, tzinfo=UTC)
MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def _state() -> top.TopState:
    state = top.TopState()
    for name, cost, ready, spec, kvs, waiting, decision in (
        ("llama-8b-cheap", 40.0, 3, 4, (0.61, 0.72, 0.70), 12.0, (3, 4, "scale_up_spare_kv_low")),
        ("llama-8b-expensive", 80.0, 1, 1, (0.35,), 0.0, (1, 1, "hold_stabilizing")),
    ):
        target = m.Target(
            namespace="llm-production", name=name, at=AT, model_id=MODEL, variant_cost=cost,
            ready_replicas=ready, spec_replicas=spec,
        )  # fmt: skip
        replicas = tuple(
            m.ReplicaMetrics(pod=f"{name}-{i}", kv_cache_usage=kv, waiting=waiting / len(kvs))
            for i, kv in enumerate(kvs)
        )
        snapshot = m.MetricsSnapshot(namespace="llm-production", name=name, at=AT, collected_at=AT, replicas=replicas)
        current, desired, reason = decision
        verdict = m.Decision(
            namespace="llm-production", name=name, at=AT, current=current, desired=desired, reason=reason
        )
        for message in (target, snapshot, verdict):
            state.apply(m.encode(message))
    return state


def _lines(width: int) -> list[str]:
    text = top.render_text(_state(), now=AT.timestamp() + 7, width=width)
    return [line for line in text.splitlines() if line.strip()]


def test_at_80_columns_the_least_useful_columns_go_and_numbers_stay_whole() -> None:
    lines = _lines(80)
    assert all(len(line) <= 80 for line in lines), lines
    header = next(line for line in lines if "VA" in line and "reason" in line)
    assert header.split() == ["VA", "ready/spec", "KV", "avg", "waiting", "decision", "reason"]
    cheap = next(line for line in lines if "llama-8b-cheap" in line)
    assert cheap.split()[:5] == ["llama-8b-cheap", "3/4", "0.68", "12", "3->4"]
    assert cheap.split()[5].startswith("scale_up_spare")  # the reason, cut short if it must be
    expensive = next(line for line in lines if "llama-8b-expensive" in line)
    assert expensive.split() == ["llama-8b-expensive", "1/1", "0.35", "0", "1->1", "hold_stabilizing"]
    assert MODEL not in "\n".join(lines) and "llm-production" not in "\n".join(lines)


def test_at_200_columns_every_column_shows_in_full() -> None:
    lines = _lines(200)
    header = next(line for line in lines if "VA" in line and "reason" in line)
    assert header.split() == [
        "namespace", "VA", "model", "cost", "ready/spec", "KV", "avg", "waiting", "age", "decision", "reason",
    ]  # fmt: skip
    cheap = next(line for line in lines if "llama-8b-cheap" in line)
    assert cheap.split() == [
        "llm-production", "llama-8b-cheap", MODEL, "40", "3/4", "0.68", "12", "7s", "3->4", "scale_up_spare_kv_low",
    ]  # fmt: skip


def test_columns_go_in_order_of_usefulness() -> None:
    names = [c.name for c in top.COLUMNS]
    widths = [10] * len(names)
    everything = sum(widths) + top.GAP * len(names)
    assert [names[i] for i in top.fit(widths, everything)] == names
    assert "model" not in [names[i] for i in top.fit(widths, everything - 1)]
    kept = [names[i] for i in top.fit(widths, 40)]
    assert kept == ["VA", "ready/spec", "KV avg", "waiting", "decision", "reason"]  # nothing left to drop


def test_with_leases_each_va_shows_its_groups_scaler_and_each_replica_its_partitions() -> None:
    from shared.partitions import partition_of

    state = _state()
    mine = partition_of("llm-production", MODEL, 16)
    state.leases = {f"scaler.{p}": ("scaler-a-1f2e3d" if p == mine else "scaler-b-4c5d6e") for p in range(16)}
    state.leases["watcher.watcher"] = "watcher-b-99aa00"
    text = top.render_text(state, now=AT.timestamp() + 7, width=240)
    cheap = next(line for line in text.splitlines() if "llama-8b-cheap" in line)
    assert cheap.split()[-1] == "scaler-a-1f2e3d"
    rows = {tuple(line.split()[:3]) for line in text.splitlines()}
    assert ("scaler", "scaler-a-1f2e3d", "1") in rows and ("scaler", "scaler-b-4c5d6e", "15") in rows
    assert ("watcher", "watcher-b-99aa00", "1") in rows
    del state.leases[f"scaler.{mine}"]  # a failover: nobody holds it for now
    text = top.render_text(state, now=AT.timestamp() + 7, width=240)
    assert next(line for line in text.splitlines() if "llama-8b-cheap" in line).split()[-1] == "-"
    # at 80 columns the owner is the first to go
    assert "owner" not in top.render_text(state, now=AT.timestamp() + 7, width=80)
