"""The order a sandbox stops its processes in: what feeds the scaler first, the scaler, then the
recorder, Prometheus and nats-server. A recorder stopped after the scaler keeps its last decisions;
a scaler stopped before the watcher let the watcher publish targets the scaler never read, and the
recording's replay then made decisions the live scaler had not (a CI failure of the replay test)."""

from __future__ import annotations

from pathlib import Path

from services.sandbox.pipeline import Intervals, Pipeline


class _Stub:
    def __init__(self, name: str, stopped: list[str]) -> None:
        self.name = name
        self._stopped = stopped

    async def stop(self) -> None:
        self._stopped.append(self.name)


async def test_the_services_stop_first_the_scaler_last_of_them_then_the_rest_in_reverse(tmp_path: Path) -> None:
    pipe = Pipeline(
        run_dir=tmp_path, kubeconfig=tmp_path / "kubeconfig", sd_file=tmp_path / "sd.json",
        intervals=Intervals(), prometheus="prometheus", replicas=2,
    )  # fmt: skip
    stopped: list[str] = []
    started = ["nats-server", "record", "prometheus", "watcher", "watcher-2", "fetcher", "fetcher-2", "scaler", "scaler-2"]
    pipe.children = [_Stub(name, stopped) for name in started]  # type: ignore[misc]
    await pipe.stop()
    assert stopped == [
        "watcher", "watcher-2", "fetcher", "fetcher-2", "scaler", "scaler-2", "prometheus", "record", "nats-server",
    ]  # fmt: skip
