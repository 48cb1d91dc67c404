"""The simulated cluster: the gateway's flow control and timeout, the live sandbox's direct routing,
the deployment controller (start-up, ReplicaSet deletion order, graceful termination), and cost counting
every pod from creation to deletion."""

from __future__ import annotations

from services.lab import fleet as fleets
from services.lab.cluster import Cluster
from services.lab.traffic import Arrival
from services.sandbox import queueing

SMALL = queueing.ServerParams(max_num_seqs=2, kv_cache_tokens=1600, block_size=16)  # 100 blocks
FLEET = fleets.Fleet(
    model="m",
    namespace="llm",
    variants=[
        fleets.Variant(
            name="cheap", accelerator="A", cost="2", max_replicas=4, startup_seconds=30, server=SMALL
        ),
        fleets.Variant(
            name="dear", accelerator="B", cost="4", max_replicas=2, min_replicas=0, startup_seconds=10
        ),
    ],
)


def _cluster(
    arrivals: list[Arrival],
    *,
    flow_control: bool = True,
    initial: dict[str, int] | None = None,
    grace: float = 30.0,
) -> Cluster:
    return Cluster(
        fleet=FLEET,
        arrivals=arrivals,
        initial=initial or {"cheap": 1, "dear": 0},
        flow_control=flow_control,
        request_timeout=60.0,
        termination_grace=grace,
    )


def test_requests_wait_at_the_gateway_while_no_replica_has_capacity_then_time_out() -> None:
    # 8 requests at t=0 on one small replica: the first starts an iteration alone (its membership is
    # fixed), the next six wait in the replica; with six waiting (more than 5) it has no capacity
    # left, so the 8th waits at the gateway.
    arrivals = [Arrival(t=0.0, input_tokens=150, output_tokens=50) for _ in range(8)]
    cluster = _cluster(arrivals)
    for i in range(8):
        cluster.arrive(i, 0.0)
    assert cluster.queue_size() == 1
    cluster.dispatch(0.001)  # mid-iteration: the replica still has six waiting, nothing moves
    assert cluster.queue_size() == 1
    cluster.dispatch(30.0)  # everything else has finished by then: capacity again
    assert cluster.queue_size() == 0 and cluster.settle(59.0) == 0
    assert cluster.log.outcome.count("served") == 8
    assert cluster.log.ttft[7] > 30.0  # its TTFT counts the wait at the gateway

    stuck = _cluster([Arrival(t=0.0, input_tokens=150, output_tokens=50)], initial={"cheap": 0, "dear": 0})
    stuck.arrive(0, 0.0)  # no replica at all: a model at zero queues everything
    stuck.dispatch(59.9)
    assert stuck.log.outcome[0] == ""
    stuck.dispatch(60.0)
    assert stuck.log.outcome[0] == "timeout" and stuck.log.finished[0] == 60.0


def test_without_flow_control_a_model_without_ready_replicas_refuses_at_once() -> None:
    cluster = _cluster(
        [Arrival(t=1.0, input_tokens=10, output_tokens=10)], flow_control=False, initial={"cheap": 0}
    )
    cluster.arrive(0, 1.0)
    assert cluster.log.outcome[0] == "no_replica" and cluster.log.finished[0] == 1.0


def test_new_pods_are_ready_after_startup_and_scale_down_removes_unready_then_newest() -> None:
    cluster = _cluster([])
    created = cluster.scale("cheap", 4, now=100.0)
    assert [p.ready_at for p in created] == [130.0, 130.0, 130.0]
    cluster.mark_ready(created[0], 130.0)
    cluster.scale("cheap", 2, now=131.0)  # two of the three new ones are not ready: they go first
    names = [p.name for p in cluster.pods("cheap")]
    assert names == sorted([cluster.pods("cheap")[0].name, created[0].name])
    cluster.scale("cheap", 1, now=140.0)  # both ready now: the newest goes
    assert [p.name for p in cluster.pods("cheap")] == ["cheap-00001"]
    d = cluster.deployments["cheap"]
    assert (d.spec, d.generation, d.scalings) == (1, 4, 3)


def test_a_deleted_pod_finishes_what_it_accepted_within_its_grace_period() -> None:
    arrivals = [Arrival(t=0.0, input_tokens=100, output_tokens=500) for _ in range(3)]
    cluster = _cluster(arrivals, initial={"cheap": 2})
    for i in range(3):
        cluster.arrive(i, 0.0)
    going = cluster.pods("cheap")[1]
    accepted = len(going.replica.in_flight())
    cluster.scale("cheap", 1, now=1.0)  # the newer pod goes: out of the endpoints, still serving
    assert accepted and [p.name for p in cluster.terminating()] == [going.name]
    assert [p.name for p in cluster.pods("cheap")] == ["cheap-00001"] and cluster.deployments["cheap"].ready == 1
    assert cluster.settle(100.0) == 0 and cluster.log.outcome.count("served") == 3  # nothing lost
    assert going.deleted is not None and 1.0 < going.deleted < 31.0  # it stopped with its last request
    # Its GPU time counts until then, not until the deletion was asked for.
    assert cluster.replica_seconds("cheap", until=100.0) == 100.0 + going.deleted


def test_what_a_pod_has_not_finished_at_the_end_of_its_grace_is_lost() -> None:
    arrivals = [Arrival(t=0.0, input_tokens=100, output_tokens=500) for _ in range(3)]
    cluster = _cluster(arrivals, initial={"cheap": 2}, grace=2.0)
    for i in range(3):
        cluster.arrive(i, 0.0)
    going = cluster.pods("cheap")[1]
    cluster.scale("cheap", 1, now=1.0)
    cluster.end_grace(going, 3.0)  # 500 tokens take longer than 2 s
    lost = [i for i, o in enumerate(cluster.log.outcome) if o == "deleted"]
    assert lost and all(cluster.log.finished[i] == 3.0 for i in lost)
    assert going.deleted == 3.0 and cluster.terminating() == []
    assert cluster.settle(100.0) == 0
    assert cluster.log.outcome.count("served") == 3 - len(lost)


def test_an_idle_or_starting_pod_stops_at_once() -> None:
    cluster = _cluster([])
    [starting] = cluster.scale("cheap", 2, now=10.0)
    cluster.scale("cheap", 1, now=20.0)
    assert starting.deleted == 20.0 and cluster.terminating() == []


def test_gpu_cost_counts_every_pod_from_creation_to_deletion_within_the_traffic() -> None:
    cluster = _cluster([])  # one cheap pod from 0
    created = cluster.scale("cheap", 2, now=60.0)  # starting from 60, ready at 90
    cluster.scale("cheap", 1, now=75.0)  # deleted while starting: 15 s of cost all the same
    assert created and cluster.replica_seconds("cheap", until=100.0) == 100.0 + 15.0
    cluster.scale("dear", 1, now=90.0)
    assert cluster.replica_seconds("dear", until=100.0) == 10.0
