"""One `wva sandbox` run: cluster + pipeline + observer + view, then summary, report and verdict.

    code = await run(Options(scenario=path, ...), stop=stop_event)

Order: nats-server, the emulated cluster (every pod ready), Prometheus if installed, watcher, fetcher
and scaler (each ready), with `wva record --follow` started before the services when asked; then the load plays for the scenario's
duration while the observer samples once a second. Everything is stopped in `finally` blocks, in
reverse order, whatever happened. The exit code is 0 when no service crashed and every expectation
was met, 1 otherwise, 2 when the run could not start, 130 when interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import msgspec
from rich.console import Console

from services.sandbox import cluster as clusters
from services.sandbox import expectations, observe, pipeline, report, scenario, servers, view
from shared import natsio, streams
from shared.settings import Settings
from shared.subjects import SubjectKind, Subjects

log = logging.getLogger(__name__)

SAMPLE_INTERVAL = 1.0


@dataclass(frozen=True, kw_only=True)
class Options:
    scenario: Path
    duration: float | None = None
    # Interval flags given on the command line; the scenario's `timing`, then Intervals()' defaults,
    # fill in the rest.
    intervals: dict[str, float] = field(default_factory=dict)
    report: Path | None = Path("sandbox-report.html")
    record: Path | None = None
    run_dir: Path | None = None
    load_scale: float = 1.0
    wait_for_capacity: bool = True  # the router's flow control (`--gateway`)
    request_timeout: float = 60.0
    live: bool | None = None  # None: a live view when stdout is a terminal
    prometheus: str | None = None  # the binary; resolved by the caller (None: scrape backend)
    replicas: int = 1  # of each service, sharing the work through leases
    nats_cluster: int = 1  # nats-server nodes


async def run(options: Options, *, stop: asyncio.Event, out: TextIO = sys.stdout) -> int:
    try:
        spec = scenario.load_scenario(options.scenario)
    except scenario.ScenarioError as exc:
        print(f"wva sandbox: {exc}", file=sys.stderr)
        return 2
    cut_short = ""
    if options.duration is not None:
        if options.duration < spec.duration and spec.expectations:
            # The expectations describe the whole story; a shorter run cannot be held to them.
            cut_short = f"expectations not checked: --duration {options.duration:g}s is shorter than the story's {spec.duration:g}s"
            spec = msgspec.structs.replace(spec, expectations=[])
        spec = msgspec.structs.replace(spec, duration=options.duration)
    run_dir = options.run_dir or Path(tempfile.mkdtemp(prefix="wva-sandbox-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    live = out.isatty() if options.live is None else options.live
    # Without a terminal rich would wrap the summary table at 80 columns.
    console = Console(file=out, width=None if out.isatty() else 140)
    say = view.LiveView(console).say if live else (lambda line: print(line, file=out, flush=True))

    collector = "prometheus" if options.prometheus else "scrape"
    why = f"prometheus at {options.prometheus}" if options.prometheus else "no `prometheus` on PATH"
    say(f"wva sandbox: scenario {spec.name!r} ({spec.duration:g}s of load); collector: {collector} ({why})")
    say(f"run directory (logs, kubeconfig, JetStream store): {run_dir}")
    for line in observe.scenario_attribution(spec).splitlines():
        say(line)
    if cut_short:
        say(cut_short)

    # This process's own log lines (NATS client, cluster) go to a file, not across the live view.
    handler = logging.FileHandler(run_dir / "sandbox.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    try:
        return await _run(options, spec, run_dir, stop=stop, out=out, live=live, console=console, say=say)
    finally:
        root.removeHandler(handler)
        handler.close()


async def _run(
    options: Options,
    spec: scenario.Scenario,
    run_dir: Path,
    *,
    stop: asyncio.Event,
    out: TextIO,
    live: bool,
    console: Console,
    say: Callable[[str], None],
) -> int:
    collector = "prometheus" if options.prometheus else "scrape"
    observer = observe.Observer(spec)
    crashed: list[str] = []
    interrupted = False
    started = False
    async with pipeline.Pipeline(
        run_dir=run_dir,
        kubeconfig=run_dir / "kubeconfig.yaml",
        sd_file=run_dir / "targets.json",
        intervals=pipeline.Intervals(**{**spec.timing.given(), **options.intervals}),
        prometheus=options.prometheus,
        replicas=options.replicas,
        nats_cluster=options.nats_cluster,
    ) as pipe:
        cluster = clusters.Cluster(
            spec,
            prometheus_sd_out=run_dir / "targets.json",
            kubeconfig_out=run_dir / "kubeconfig.yaml",
            load_scale=options.load_scale,
            wait_for_capacity=options.wait_for_capacity,
            request_timeout=options.request_timeout,
        )
        try:
            async with cluster:
                try:
                    boot = max((v.startup_seconds for _, v in spec.variants()), default=0.0)
                    starting = asyncio.create_task(_start(pipe, cluster, boot, options.record), name="sandbox-start")
                    waiting = asyncio.create_task(stop.wait(), name="sandbox-stop-wait")
                    done, _ = await asyncio.wait({starting, waiting}, return_when=asyncio.FIRST_COMPLETED)
                    waiting.cancel()
                    if starting not in done:
                        starting.cancel()
                        with contextlib.suppress(asyncio.CancelledError, pipeline.PipelineError):
                            await starting
                        say("interrupted while starting")
                        return 130
                    starting.result()  # PipelineError surfaces here
                    for line in pipe.describe():
                        say(line)
                    if options.record is not None:
                        say(f"recording to {options.record}")
                    started = True
                    crashed, interrupted = await _play(
                        pipe, cluster, observer, spec, stop=stop, live=live, console=console, out=out
                    )
                finally:
                    # The record tool first (SIGINT: it writes its file), then the services, while the
                    # emulated cluster is still up; the cluster stops when `async with cluster` exits.
                    await pipe.stop()
        except pipeline.PipelineError as exc:
            print(f"wva sandbox: {exc}", file=sys.stderr)
            return 2
    if not started:
        return 2
    if observer.timeline.first_snapshot is not None:
        say(fetch_line(observer.timeline.first_snapshot, pipe.intervals.fetch))
    if options.record is not None:
        say(
            f"recorded to {options.record}"
            if options.record.exists()
            else f"recording {options.record} was not written"
        )
    outcomes = expectations.check(observer.timeline, spec.expectations)
    summary = report.summarize(observer.timeline, collector=collector, outcomes=outcomes, crashed=crashed)
    console.print(report.table(summary))
    for line in report.text_lines(summary):
        say(line)
    if options.report is not None:
        options.report.write_text(report.render_html(summary, observer.timeline))
        say(f"report: {options.report.resolve()}")
    if interrupted:
        say("interrupted: the run was cut short")
        return 130
    return 0 if summary.ok else 1


def discovery_line(ready: float) -> str:
    """When Prometheus (ready at `ready`, seconds from the load's start) first hands new targets to its
    scrape loops: the decision lab replays a run with the same tick (tests/e2e/test_lab_cross_check.py)."""
    first = ready % servers.DISCOVERY_INTERVAL
    return f"prometheus:   discovers new pods every {servers.DISCOVERY_INTERVAL:g}s from t={first:.2f}s"


def fetch_line(first: float, interval: float) -> str:
    """When the fetcher's cycles fall (the first snapshot's time, seconds from the load's start), for
    the decision lab's replay of the run, like :func:`discovery_line`."""
    return f"fetcher:      publishes every {interval:g}s from t={first % interval:.2f}s"


async def _start(pipe: pipeline.Pipeline, cluster: clusters.Cluster, boot: float, record: Path | None) -> None:
    """The (started) cluster's pods ready, then nats-server, the recorder, Prometheus and the services."""
    try:
        async with asyncio.timeout(30.0 + boot):
            await cluster.wait_ready()
    except TimeoutError:
        log.warning("not every pod became ready in time; running anyway")
    await pipe.start(record=record, gateway=cluster.gateway_address)


async def _play(
    pipe: pipeline.Pipeline,
    cluster: clusters.Cluster,
    observer: observe.Observer,
    spec: scenario.Scenario,
    *,
    stop: asyncio.Event,
    live: bool,
    console: Console,
    out: TextIO,
) -> tuple[list[str], bool]:
    """Play the load while sampling; returns (crashed services, interrupted)."""
    loop = asyncio.get_running_loop()
    origin = loop.time()
    nc = await natsio.connect(Settings(nats_url=pipe.nats_url), name="wva-sandbox")
    shown = view.LiveView(console) if live else view.LineView(out)
    crashed: list[str] = []
    try:
        subjects = Subjects()
        sub = await observe.follow(nc, subjects.wildcard(), observer, clock=loop, origin=origin)
        # What each replica held before the view began (they said so while the pipeline started).
        for msg in await streams.last_values(nc.jetstream(), subjects.wildcard(SubjectKind.OWNERS)):
            observer.handle(msg.subject, msg.data, loop.time() - origin)
        load_task = asyncio.create_task(cluster.run_load(), name="sandbox-load")
        try:
            with shown:
                if pipe.prometheus_ready_at is not None:
                    shown.say(discovery_line(pipe.prometheus_ready_at - origin))
                while True:
                    t = loop.time() - origin
                    observer.sample(t, cluster)
                    shown.refresh(observer, t)
                    gone = pipe.crashed()
                    if gone:
                        crashed = [f"{c.name} (exit {c.exit_code()}, log {c.log_path})" for c in gone]
                        for c in gone:
                            shown.say(
                                f"{c.name} exited with {c.exit_code()}; last lines of {c.log_path}:\n{c.log_tail()}"
                            )
                        return crashed, False
                    if load_task.done():
                        load_task.result()  # a crashed load generator fails loudly
                        return crashed, False
                    if stop.is_set():
                        return crashed, True
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            stop.wait(), timeout=max(0.05, SAMPLE_INTERVAL - (loop.time() - origin - t))
                        )
        finally:
            load_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await load_task
            await sub.unsubscribe()
    finally:
        await nc.close()
