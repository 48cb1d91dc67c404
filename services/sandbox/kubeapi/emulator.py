"""`KubeApiEmulator`: store, deployment controller and HTTP server on 127.0.0.1, started and stopped together."""

from __future__ import annotations

import socket
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from aiohttp import web

from services.sandbox.kubeapi import resources
from services.sandbox.kubeapi.controller import DeploymentController
from services.sandbox.kubeapi.faults import Faults
from services.sandbox.kubeapi.runtime import PodRuntime
from services.sandbox.kubeapi.server import ApiServer
from services.sandbox.kubeapi.store import Store
from services.sandbox.kubeapi.validation import DEFAULT_CRD_PATH, Admission

CONTEXT_NAME = "wva-emulator"
INITIAL_NAMESPACES = ("default", "kube-system", "kube-public")


class KubeApiEmulator:
    """An in-process Kubernetes API server for tests and `wva sandbox`.

    Clients reach it over real HTTP through the kubeconfig `write_kubeconfig` writes; tests also drive
    it directly through `.store` (objects and change feed) and `.faults` (fault injection, request counts).
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        runtime: PodRuntime | None = None,
        startup_delay: float = 0.2,
        bookmark_interval: float = 1.0,
        history_limit: int = 1000,
        auto_create_namespaces: bool = True,
        crd_path: Path = DEFAULT_CRD_PATH,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.token = token
        self.host = host
        self._requested_port = port
        self.store = Store(
            admission=Admission(crd_path=crd_path),
            history_limit=history_limit,
            auto_create_namespaces=auto_create_namespaces,
        )
        self.faults = Faults(self.store)
        self.controller = DeploymentController(self.store, runtime=runtime, startup_delay=startup_delay)
        self.server = ApiServer(
            self.store, self.faults, token=token, bookmark_interval=bookmark_interval,
            server_address=lambda: f"{self.host}:{self.port}",
        )
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        for ns in INITIAL_NAMESPACES:
            self.store.create(resources.NAMESPACES, {"metadata": {"name": ns}})

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the emulator is not started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        await self.controller.start()
        runner = web.AppRunner(self.server.make_app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._requested_port))
        site = web.SockSite(runner, sock)
        await site.start()
        self._runner = runner
        self._port = sock.getsockname()[1]

    async def stop(self) -> None:
        self.server.close()
        self.store.close_subscriptions(tag="watch")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.controller.stop()

    async def __aenter__(self) -> KubeApiEmulator:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def kubeconfig(self, namespace: str = "default") -> dict[str, Any]:
        user: dict[str, Any] = {"token": self.token} if self.token is not None else {}
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": CONTEXT_NAME, "cluster": {"server": self.url}}],
            "users": [{"name": CONTEXT_NAME, "user": user}],
            "contexts": [
                {"name": CONTEXT_NAME, "context": {"cluster": CONTEXT_NAME, "user": CONTEXT_NAME, "namespace": namespace}}
            ],
            "current-context": CONTEXT_NAME,
            "preferences": {},
        }

    def write_kubeconfig(self, path: str | Path, *, namespace: str = "default") -> Path:
        """Write a kubeconfig for kubectl and kubernetes-asyncio's `load_kube_config(config_file=...)`."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump(self.kubeconfig(namespace), sort_keys=False))
        target.chmod(0o600)
        return target
