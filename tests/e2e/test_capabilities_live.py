"""Issue #15, done when: the analyzers, pacing and scale from zero work in the live pipeline — one
test per capability, with the watcher, fetcher and scaler as processes against the emulated cluster,
its router (the inference gateway with its queue per model) and, where said, a real Prometheus.

- V2 scales a model up again while the first pod of its previous step is still starting: the gateway
  queue keeps growing past what is coming (docs/algorithms.md, V2 step 3: anticipated supply, no
  transition guard).
- A model at zero comes back within one fetch interval (plus, through Prometheus, one scrape
  interval) of the first request queued at the gateway, sized for the queue, and the requests that
  waited are then served (docs/algorithms.md, "Scale from zero (scaleToZero) and to zero").
- A paced scale-down removes several replicas in one step once the stabilization window has passed
  (docs/algorithms.md, "Scale-down pacing").
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from services.sandbox.pipeline import Intervals
from tests.fixtures.live import StartLive
from tests.fixtures.sandbox import CI_CHEAP_SERVER

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]


def scenario(*, variant: str, load: str, min_replicas: int, max_replicas: int, initial: int, startup: float) -> str:
    return f"""
name: {variant}
duration: 600
seed: 11
namespaces: [llm]
models:
  - id: org/model
    namespace: llm
    requests:
      input_tokens: {{kind: fixed, value: 512}}
      output_tokens: {{kind: fixed, value: 128}}
{load}
    variants:
      - name: {variant}
        cost: "10"
        accelerator: L40S
        min_replicas: {min_replicas}
        max_replicas: {max_replicas}
        initial_replicas: {initial}
        startup_seconds: {startup}
{CI_CHEAP_SERVER}"""


STARTUP = 10.0


async def test_v2_scales_up_again_while_its_first_new_pod_is_still_starting(live_pipeline: StartLive) -> None:
    # 2 requests/s while the fetcher gets its first rates, then 24 (four replicas' worth) on one replica.
    load = "    load: {kind: step, initial_rps: 2, steps: [[3, 24]]}"
    live = await live_pipeline(
        scenario(variant="slow-start", load=load, min_replicas=1, max_replicas=8, initial=1, startup=STARTUP),
        config={"analyzer": "v2"},
        intervals=Intervals(fetch=1.0, scrape=1.0, reconcile=1.0, stabilization=120.0, rate_window=5.0),
        prometheus=False,
    )
    traffic = asyncio.create_task(live.cluster.run_load())
    try:

        def ups() -> list[tuple[float, int, int, int]]:
            return [(s.t, s.before, s.after, s.ready) for s in live.of("slow-start") if s.after > s.before]

        await live.until(lambda: len(ups()) >= 2, timeout=3 + STARTUP + 20, what="two scale-ups")
    finally:
        traffic.cancel()
        await asyncio.gather(traffic, return_exceptions=True)
    (t1, _, first_to, _), (t2, second_from, second_to, ready_at_second) = ups()[:2]
    assert second_from == first_to and second_to > first_to
    # The second step came while none of the first step's pods was ready: only the original one served.
    assert ready_at_second == 1, ups()
    assert t2 - t1 < STARTUP, ups()
    # V2 decided it (V1's transition guard would have held the group): demand past the anticipated
    # supply, which already counted the starting pods, while the supply was the one ready replica's.
    # The steps from the scaler's log: the once-a-second samples above may see two steps as one, and
    # may see a step's PATCH before the scaler has logged its decision.
    def steps() -> list[dict[str, Any]]:
        return [d for d in live.decisions() if d["reason"] == "scale_up_required_capacity" and d.get("outcome") == "applied"]

    await live.until(lambda: len(steps()) >= 2, timeout=10, what="the second step's decision in the log")
    step = steps()[1]
    assert "gateway queue" in step["detail"] and "supply 13,107, anticipated" in step["detail"], step


@pytest.mark.parametrize("backend", ["scrape", "prometheus"])
async def test_a_model_at_zero_returns_within_one_fetch_of_its_first_queued_request(
    live_pipeline: StartLive, backend: str
) -> None:
    intervals = Intervals(fetch=2.0, scrape=1.0, reconcile=30.0, stabilization=5.0, rate_window=5.0)
    live = await live_pipeline(
        scenario(variant="at-zero", load="", min_replicas=0, max_replicas=4, initial=1, startup=1.0),
        # No request at all for 3 s: the model goes to zero. The reconcile tick (30 s) is far longer than
        # the bound below, so only a snapshot's arrival can bring the model back in time.
        config={"analyzer": "v2", "scaleToZero": {"enabled": True, "retentionSeconds": 3}},
        intervals=intervals,
        prometheus=backend == "prometheus",
    )
    await live.until(lambda: live.cluster.spec_replicas("at-zero") == 0, timeout=30, what="scale to zero")
    await live.until(lambda: not live.cluster.ready_pods(), timeout=10, what="its pod gone")
    await asyncio.sleep(intervals.fetch)  # a cycle sees the model at zero, with nothing waiting

    queued = 30
    first_queued = live.now()
    for _ in range(queued):
        assert live.cluster.router.route("org/model", input_tokens=512, output_tokens=128)
    bound = intervals.fetch + (intervals.scrape if backend == "prometheus" else 0.0) + 1.5  # + the reaction
    await live.until(lambda: bool(live.of("at-zero")) and live.of("at-zero")[-1].after > 0, timeout=20,
                     what="back from zero")
    back = live.of("at-zero")[-1]
    print(f"{backend}: first queued request to PATCH {back.t - first_queued:.2f}s (bound {bound:g}s)")
    assert back.t - first_queued <= bound
    # Sized for the queue: the capacity learned before going to zero (13,107.2 tokens), 1,024 tokens a
    # request (none ever completed), scaleUpThreshold 0.85: ceil(30 x 1024 / 0.85 / 13107.2) = 3.
    assert (back.before, back.after) == (0, math.ceil(queued * 1024 / 0.85 / 13107.2)) == (0, 3)
    # The requests that waited are served once the pods are ready; none timed out.
    counters = live.cluster.router.counters["org/model"]
    await live.until(lambda: counters.routed == queued, timeout=15, what="the queued requests served")
    assert counters.timed_out == 0 and live.cluster.router.queue_size("org/model") == 0


async def test_a_paced_scale_down_removes_several_replicas_in_one_step(live_pipeline: StartLive) -> None:
    window = 8.0
    began = asyncio.get_running_loop().time()
    live = await live_pipeline(
        scenario(variant="paced", load="    load: {kind: constant, rps: 2}", min_replicas=1, max_replicas=4,
                 initial=4, startup=1.0),
        config={"analyzer": "v2"},
        intervals=Intervals(fetch=1.0, scrape=1.0, reconcile=1.0, stabilization=window, rate_window=5.0),
        prometheus=True,
    )
    traffic = asyncio.create_task(live.cluster.run_load())
    try:
        await live.until(lambda: bool(live.of("paced")), timeout=window + 30, what="a scale-down")
        await asyncio.sleep(3 * 1.0)  # a few more decisions: the step was the whole scale-down
    finally:
        traffic.cancel()
        await asyncio.gather(traffic, return_exceptions=True)
    # 2 requests/s need a fraction of one replica: V2's spare capacity covers three of the four.
    assert [(s.before, s.after) for s in live.of("paced")] == [(4, 1)]
    # Not before a whole window: the scaler started after `began` and counts the unseen part as 4.
    assert live.of("paced")[0].t - began >= window
    assert "hold_stabilizing" in live.log("scaler")  # recommended, then held for the window
