"""The production core in the lab: fed the Targets the watcher would build, driven as its shell does,
in scale mode (wva) and in hpa mode through an HPA (wva-v1); wva:FILE configurations."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from services.lab import PolicyError, runner, simulation, wva_policy
from services.lab import fleet as fleets
from services.lab.settings import Settings, Timing
from services.lab.traffic import Arrival, Traffic
from services.sandbox import queueing
from services.watcher import kubeobjects, targets
from shared import variantautoscaling

FLEET = fleets.Fleet(
    model="org/model",
    namespace="llm",
    variants=[
        fleets.Variant(name="cheap", accelerator="L40S", cost="40", max_replicas=6, startup_seconds=5),
        fleets.Variant(
            name="dear", accelerator="H100", cost="80", max_replicas=3, startup_seconds=5,
            server=queueing.ServerParams(max_num_seqs=64, kv_cache_tokens=40960),
        ),
    ],
)  # fmt: skip
FAST = Settings(
    timing=Timing(scrape_interval=1, fetch_interval=1, reconcile_interval=1, stabilization=10, rate_window=15)
)


def _ramp(seconds: float, rps: float) -> Traffic:
    step = 1.0 / rps
    arrivals = tuple(
        Arrival(t=i * step, input_tokens=500, output_tokens=150) for i in range(int(seconds * rps))
    )
    return Traffic(arrivals=arrivals, duration=seconds, source="test")


def _manifests(cluster: Any, name: str) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    d = cluster.deployments[name]
    v = d.variant
    va = {
        "metadata": {"name": name, "namespace": "llm", "generation": 1,
                     "labels": {"inference.optimization/acceleratorName": v.accelerator}},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}, "modelID": "org/model",
                 "variantCost": v.cost, "minReplicas": v.min_replicas, "maxReplicas": v.max_replicas},
    }  # fmt: skip
    ready = sum(1 for p in d.pods.values() if p.ready)
    deployment = {
        "metadata": {"name": name, "namespace": "llm", "uid": f"uid-{name}", "generation": d.generation},
        "spec": {"replicas": d.spec, "template": {"metadata": {"labels": {"app": name}}}},
        "status": {"readyReplicas": ready, "updatedReplicas": len(d.pods), "availableReplicas": ready},
    }
    pods = [
        {
            "metadata": {
                "name": p.name,
                "namespace": "llm",
                "uid": p.name,
                "ownerReferences": [{"kind": "ReplicaSet", "name": "rs", "uid": "rs", "controller": True}],
            },
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "True" if p.ready else "False"}],
            },
        }
        for p in d.pods.values()
    ]
    return va, deployment, pods


def test_targets_are_what_the_watcher_builds_from_the_same_objects() -> None:
    policy = wva_policy.build(
        wva_policy.WvaSpec(name="wva"), fetch_interval=1, stabilization=10, reconcile_interval=1
    )
    seen: list[Any] = []

    class Recorder(wva_policy.WvaPolicy):
        def _feed(self, event: Any) -> None:
            seen.append((self.sim.now, event))
            super()._feed(event)

    recorder = Recorder(name="wva", configs=policy.core._configs, mode="scale", reconcile_interval=1)
    run = simulation.run(traffic=_ramp(60, 40), fleet=FLEET, policy=recorder, settings=FAST)
    assert run.scalings, "the load should make it scale"
    cluster = recorder.sim.cluster
    for name in ("cheap", "dear"):
        va, deployment, pods = _manifests(cluster, name)
        expected = targets.build(
            variantautoscaling.variant_autoscaling(va),
            kubeobjects.deployment(deployment),
            [kubeobjects.pod(p) for p in pods],
            at=datetime.now(UTC),
        )
        mine = recorder._published[name]
        differ = {
            f
            for f in expected.__struct_fields__
            if f not in ("at", "template_hash", "pods") and getattr(expected, f) != getattr(mine, f)
        }
        assert not differ, {f: (getattr(expected, f), getattr(mine, f)) for f in differ}
        assert [(p.name, p.ready, p.phase) for p in expected.pods] == [
            (p.name, p.ready, p.phase) for p in mine.pods
        ]
    kinds = [type(e).__name__ for _, e in seen]
    # Every spec change is followed by its invalidation, with the new generation.
    for (t, event), (t2, following) in itertools.pairwise(seen):
        if type(event).__name__ == "Target" and type(following).__name__ == "Invalidation":
            assert following.deployment_generation == event.deployment_generation and t == t2
    assert kinds.count("Invalidation") == len(run.scalings)
    assert kinds.count("Tick") >= 60 and kinds.count("MetricsSnapshot") >= 2 * 60


def _scale_up_and_down(config: dict[str, str] | None) -> tuple[simulation.Run, wva_policy.WvaPolicy]:
    policy = wva_policy.build(
        wva_policy.WvaSpec(name="wva", config=config), fetch_interval=1, stabilization=10, reconcile_interval=1
    )
    offered = Traffic(
        arrivals=_ramp(60, 40).arrivals, duration=120.0, source="60 s of 40 req/s, then quiet for 60 s"
    )
    return simulation.run(traffic=offered, fleet=FLEET, policy=policy, settings=FAST), policy


def test_wva_v1_rules_grow_the_cheap_variant_first_and_shrink_after_the_load() -> None:
    run, policy = _scale_up_and_down({"default": "analyzer: v1"})
    ups = [s for s in run.scalings if s.after > s.before]
    downs = [s for s in run.scalings if s.after < s.before]
    # The cheapest variant grows first; the dear one only once the cheap one is at its maxReplicas.
    assert ups and ups[0].variant == "cheap"
    first_dear = next((s.t for s in ups if s.variant == "dear"), None)
    full = next(s.t for s in ups if s.variant == "cheap" and s.after == 6)
    assert first_dear is None or first_dear >= full
    assert downs and downs[-1].t > 60.0
    # Decisions come from the core itself, with its reason codes.
    reasons = {d.reason for d in policy.decisions}
    assert {"scale_up_saturated", "scale_down_spare_capacity"} & reasons


def test_the_default_analyzer_grows_under_load_and_gives_back_after_it() -> None:
    run, policy = _scale_up_and_down(None)
    ups = [s for s in run.scalings if s.after > s.before]
    downs = [s for s in run.scalings if s.after < s.before]
    assert ups and ups[0].t < 60.0 and downs and downs[-1].t > 60.0
    assert [d.spec for d in run.samples][-1] == (1, 1)  # back to the floor once the load is gone
    # Too short a run for a latency fit: V2 decides, and every decision says so.
    grown = [d for d in policy.decisions if d.reason == "scale_up_required_capacity"]
    assert grown and all(d.detail.startswith("latency not fitted yet") for d in grown)


def test_wva_v1_acts_only_through_its_hpa_on_sync_ticks() -> None:
    policy = wva_policy.build(
        wva_policy.WvaSpec(name="wva-v1", v1=True), fetch_interval=1, stabilization=10, reconcile_interval=1
    )
    assert policy.mode == "hpa" and policy.reconcile_interval == wva_policy.V1_RECONCILE
    run = simulation.run(traffic=_ramp(90, 40), fleet=FLEET, policy=policy, settings=FAST)
    assert run.scalings
    assert all(s.t % 15.0 == 0 for s in run.scalings)  # only the HPA (15 s syncs) changes replicas
    assert all(s.after - s.before == 1 for s in run.scalings if s.after > s.before)  # one at a time
    assert all(not d.applied for d in policy.decisions)  # hpa mode patches nothing itself


def test_wva_config_files_are_read_as_the_scaler_reads_them(tmp_path: Path) -> None:
    good = tmp_path / "eager.yaml"
    good.write_text("default: |\n  kvCacheThreshold: 0.6\n  kvSpareTrigger: 0.2\n")
    spec = runner.parse_policy(f"eager=wva:{good}")
    assert spec.name == "eager" and spec.wva is not None and spec.wva.config is not None
    policy = runner.build(spec, runner.Lab(traffic=_ramp(1, 1), fleet=FLEET, settings=FAST), None)
    assert isinstance(policy, wva_policy.WvaPolicy)
    config = policy.core._configs.resolve("llm", "org/model")
    assert (config.kv_cache_threshold, config.kv_spare_trigger, config.scale_down_stabilization_seconds) == (
        0.6,
        0.2,
        10,
    )
    assert runner.parse_policy(f"wva:{good}").name == "wva:eager"
    bad = tmp_path / "bad.yaml"
    bad.write_text("default: |\n  kvCacheThreshold: 2\n")
    with pytest.raises(PolicyError, match=r"bad.yaml: invalid saturation config: .*kvCacheThreshold"):
        runner.parse_policy(f"wva:{bad}")
    with pytest.raises(PolicyError, match="cannot read"):
        runner.parse_policy(f"wva:{tmp_path / 'missing.yaml'}")
    with pytest.raises(PolicyError, match="unknown policy"):
        runner.parse_policy("hpa-cpu")
    with pytest.raises(PolicyError, match="given twice: wva"):
        runner.parse_policies(["wva", "wva"])


def test_snapshots_are_ordered_after_the_invalidation_they_follow() -> None:
    policy = wva_policy.build(
        wva_policy.WvaSpec(name="wva"), fetch_interval=1, stabilization=10, reconcile_interval=1
    )
    simulation.run(traffic=_ramp(40, 40), fleet=FLEET, policy=policy, settings=FAST)
    # After each applied scale-up the core holds on the invalidation, then evaluates the refresh.
    held = [d for d in policy.decisions if d.reason == "hold_invalidated"]
    assert held
    assert msgspec.json.encode(policy.decisions[0])  # wire messages, as published


def test_the_fetch_cycle_starts_at_fetch_start() -> None:
    """A live run's fetcher has a phase of its own; the lab replays it (tests/e2e/test_lab_cross_check)."""
    phased = Settings(timing=dataclasses.replace(FAST.timing, fetch_start=0.4))
    for settings, phase in ((FAST, 0.0), (phased, 0.4)):
        policy = wva_policy.build(
            wva_policy.WvaSpec(name="wva"), fetch_interval=1, stabilization=10, reconcile_interval=1
        )
        run = simulation.run(traffic=_ramp(30, 40), fleet=FLEET, policy=policy, settings=settings)
        first = min(s.t for s in run.scalings if s.after > s.before)
        assert first - phase == pytest.approx(round(first - phase), abs=1e-6), (phase, first)


class _FirstScrapes:
    """A policy that only watches Prometheus: when each ready pod's first sample appears."""

    name = "probe"
    observes = True

    def __init__(self) -> None:
        self.first: dict[str, float] = {}

    def initial(self, fleet: fleets.Fleet, traffic: Traffic) -> None:
        return None

    def start(self, sim: simulation.Sim) -> None:
        def probe() -> None:
            for pod in sim.cluster.ready_pods():
                if pod.name not in self.first and sim.prometheus.instant(pod.name, "running", sim.now) is not None:
                    self.first[pod.name] = sim.now

        sim.every(0.05, probe)


@pytest.mark.parametrize(("start", "tick"), [(None, 5.0), (2.0, 2.0), (0.0, 0.0)])
def test_pods_are_first_scraped_after_the_first_discovery_tick(start: float | None, tick: float) -> None:
    settings = Settings(timing=dataclasses.replace(FAST.timing, discovery_start=start))
    probe = _FirstScrapes()
    simulation.run(traffic=_ramp(12, 1), fleet=FLEET, policy=probe, settings=settings)
    assert len(probe.first) == 2  # one ready pod per variant from the start
    assert all(tick <= t <= tick + FAST.timing.scrape_interval + 0.05 for t in probe.first.values()), probe.first
