"""Emulated vLLM pods for Prometheus to scrape, in a child process so scrapes do not load the
benchmark's event loop.

Every pod is a ``services.sandbox.vllm.EmulatedServer`` (the sandbox's real ``/metrics`` text, same
metric families and labels as vLLM) that served a little traffic; its text is rendered once and served
at ``/pods/<namespace>/<pod>/metrics`` from one port. :func:`sd_document` gives the file_sd entries
(``__metrics_path__`` per pod, labels ``namespace`` and ``pod`` as Kubernetes discovery would add).

    python -m bench.pods SPEC.json    # SPEC: [[namespace, pod, model_id], ...]; prints the port
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def sd_document(port: int, pods: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
    return [
        {
            "targets": [f"127.0.0.1:{port}"],
            "labels": {"namespace": ns, "pod": pod, "__metrics_path__": f"/pods/{ns}/{pod}/metrics"},
        }
        for ns, pod, _ in pods
    ]


class PodsProcess:
    """The child process; ``start()`` returns once it serves every pod."""

    def __init__(self, pods: list[tuple[str, str, str]], workdir: Path) -> None:
        self.pods = pods
        self.spec = workdir / "pods.json"
        self.spec.write_text(json.dumps(pods))
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0

    def start(self, timeout: float = 120.0) -> int:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.pods", str(self.spec)], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = self.proc.stdout.readline()  # blocks until the child prints its port (or dies)
        if not line or time.monotonic() > deadline:
            raise RuntimeError("emulated pods did not start")
        self.port = int(line)
        return self.port

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None


async def _serve(spec: Path) -> None:
    from aiohttp import web

    from services.sandbox import exposition, queueing, vllm

    pods = [tuple(p) for p in json.loads(spec.read_text())]  # noqa: ASYNC240 - once, before serving
    clock = [0.0]
    bodies: dict[tuple[str, str], bytes] = {}
    for i, (ns, pod, model) in enumerate(pods):
        server = vllm.EmulatedServer(model_id=model, params=queueing.ServerParams(), clock=lambda: clock[0])
        clock[0] = 0.0
        for _ in range(3 + i % 5):
            server.submit(input_tokens=512, output_tokens=128)
        clock[0] = 0.5 + (i % 7) * 0.1  # some requests finished, some running: non-trivial values
        bodies[(ns, pod)] = server.metrics_text()

    async def metrics(request: web.Request) -> web.Response:
        body = bodies.get((request.match_info["ns"], request.match_info["pod"]))
        if body is None:
            raise web.HTTPNotFound()
        return web.Response(body=body, headers={"Content-Type": exposition.CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/pods/{ns}/{pod}/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    listening = site._server
    assert listening is not None
    port = listening.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    print(port, flush=True)
    try:
        await asyncio.Event().wait()  # until terminated
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    import contextlib
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt, SystemExit):
        asyncio.run(_serve(Path(sys.argv[1])))
