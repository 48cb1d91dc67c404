"""The baselines in a simulated run: hpa-kv and keda-queue act on their sync and polling ticks, the
oracle's search returns the cheapest mix that meets the SLO, and no policy beats the oracle's cost
at the same or a higher attainment."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.lab import fleet as fleets
from services.lab import runner, scoring, simulation, traffic
from services.lab.policies import oracle as oracles
from services.lab.policies.hpa_kv import HpaKv
from services.lab.policies.keda_queue import KedaQueue
from services.lab.settings import Settings, Timing
from services.lab.traffic import Arrival, Traffic
from services.sandbox import queueing, scenario

SCENARIOS = Path(scenario.__file__).parent / "scenarios"
SERVER = queueing.ServerParams(max_num_seqs=32, kv_cache_tokens=16384)
FLEET = fleets.Fleet(
    model="org/model",
    variants=[
        fleets.Variant(name="cheap", accelerator="L40S", cost="40", max_replicas=6, startup_seconds=5, server=SERVER),
        fleets.Variant(name="dear", accelerator="H100", cost="80", min_replicas=0, max_replicas=2, initial_replicas=0,
                       startup_seconds=5, server=queueing.ServerParams(max_num_seqs=64, kv_cache_tokens=40960)),
    ],
)  # fmt: skip
SETTINGS = Settings(
    timing=Timing(scrape_interval=5, fetch_interval=5, reconcile_interval=5, stabilization=30)
)


def _steady(seconds: float, rps: float, *, start: float = 0.0, tokens: int = 500) -> tuple[Arrival, ...]:
    return tuple(
        Arrival(t=start + i / rps, input_tokens=tokens, output_tokens=150) for i in range(int(seconds * rps))
    )


def test_hpa_kv_scales_on_15_second_syncs_and_waits_300_seconds_to_scale_down() -> None:
    offered = Traffic(arrivals=_steady(120, 25), duration=600.0, source="2 min busy, 8 min quiet")
    run = simulation.run(traffic=offered, fleet=FLEET, policy=HpaKv(), settings=SETTINGS)
    assert run.scalings and all(s.t % 15.0 == 0 for s in run.scalings)
    ups = [s for s in run.scalings if s.variant == "cheap" and s.after > s.before]
    downs = [s for s in run.scalings if s.variant == "cheap" and s.after < s.before]
    assert ups and downs
    # The load ends at 120 s; a recommendation as high as the peak stays in the window for 300 s.
    assert downs[0].t >= 120.0 + 300.0 - 15.0
    # The dear variant starts at zero: an HPA leaves a target at zero alone (scaling disabled).
    assert not any(s.variant == "dear" for s in run.scalings)


def test_keda_activates_a_variant_at_zero_on_its_polling_interval_not_before() -> None:
    fleet = fleets.Fleet(
        model="org/model",
        variants=[fleets.Variant(name="solo", accelerator="A", cost="1", min_replicas=0, max_replicas=4,
                                 initial_replicas=0, startup_seconds=5, server=SERVER)],
    )  # fmt: skip
    offered = Traffic(
        arrivals=_steady(60, 2, start=2.0), duration=60.0, source="a model at zero gets requests"
    )
    policy = KedaQueue()
    run = simulation.run(traffic=offered, fleet=fleet, policy=policy, settings=SETTINGS)
    first = run.scalings[0]
    # Requests wait at the gateway from 2 s; the queue metric is scraped within 5 s of discovery
    # (at 5 s); the HPA (15 s syncs) leaves a target at zero alone; KEDA's poll at 30 s activates it.
    assert (first.t, first.before, first.after) == (30.0, 0, 1)
    served = [o for o in run.log.outcome if o == "served"]
    assert served and run.log.ttft[0] > 30.0  # the first request waited for the activation


def test_keda_scales_one_to_n_on_hpa_syncs_from_the_waiting_requests() -> None:
    offered = Traffic(arrivals=_steady(90, 40, tokens=1500), duration=90.0, source="overload")
    run = simulation.run(traffic=offered, fleet=FLEET, policy=KedaQueue(), settings=SETTINGS)
    ups = [s for s in run.scalings if s.after > s.before and s.variant == "cheap"]
    assert ups and all(s.t % 15.0 == 0 for s in ups)


def _window() -> Traffic:
    return Traffic(arrivals=_steady(30, 30, tokens=800), duration=30.0, source="30 req/s for 30 s")


def test_the_oracle_search_returns_the_cheapest_mix_that_meets_the_slo() -> None:
    window = _window()
    mix, runs = oracles.cheapest_mix(window, FLEET, SETTINGS)
    assert oracles.meets(window, FLEET, mix, SETTINGS)
    cost = oracles.mix_cost(FLEET, mix)
    cheaper = [m for m in oracles.candidates(FLEET) if oracles.mix_cost(FLEET, m) < cost]
    assert cheaper, "the test needs a window that one replica cannot serve"
    for m in cheaper:
        assert not oracles.meets(window, FLEET, m, SETTINGS), m
    assert runs <= len(cheaper) + 1  # dominated mixes were skipped without a run


def test_the_oracle_schedule_provisions_each_window_startup_seconds_ahead() -> None:
    plan = oracles.Plan(window=60.0, mixes=[(1, 0), (3, 0), (2, 1), (1, 0)])
    points = oracles.schedule(plan, FLEET)  # start-up 5 s for both
    assert points == [
        (0.0, {"cheap": 1, "dear": 0}),
        (55.0, {"cheap": 3, "dear": 0}),  # window 1 needs 3: created 5 s ahead
        (115.0, {"cheap": 3, "dear": 1}),  # window 2's dear replica, 5 s ahead; window 1 still runs
        (120.0, {"cheap": 2, "dear": 1}),  # window 1 over: its extra cheap replica goes
        (180.0, {"cheap": 1, "dear": 0}),
    ]


@pytest.mark.slow
def test_no_policy_is_cheaper_than_the_oracle_at_equal_or_higher_attainment() -> None:
    spec = scenario.load_scenario(SCENARIOS / "spike.yaml")
    lab = runner.Lab(
        traffic=traffic.from_scenario(spec),
        fleet=fleets.from_scenario(spec),
        settings=Settings(
            timing=Timing(
                scrape_interval=1, fetch_interval=2, reconcile_interval=2, stabilization=20, rate_window=15
            )
        ),
        oracle_window=20.0,
    )
    results, plan = runner.run_all(lab, runner.parse_policies([]), jobs=1)
    assert plan is not None and len(plan.mixes) == 6
    by_name = {r.policy: r for r in results}
    best = by_name["oracle"]
    assert best.attainment > 0.95
    for r in results:
        if r.attainment >= best.attainment:
            assert r.gpu_cost >= best.gpu_cost, (
                r.policy,
                r.gpu_cost,
                r.attainment,
                best.gpu_cost,
                best.attainment,
            )
    assert by_name["static-peak"].scaling_actions == 0
    ((rise,),) = [scoring.load_rises(lab.traffic)]  # the spike: 5x the base rate from 40 s
    assert 34.0 <= rise <= 42.0  # the start of the 6 s window in which it shows
