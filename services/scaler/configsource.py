"""Where the scaling configuration comes from: the ConfigMap (watched) or a YAML file (polled).

Both hand the raw ``data`` mapping (key -> YAML text, as in the ConfigMap) to a callback; parsing and
"keep the last valid one" happen in the core (a ``ConfigData`` event, ``scaling_config.apply_configmap``).
``None`` means the ConfigMap does not exist (defaults apply).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client

from services.scaler import telemetry
from shared import kube
from shared.kubewatch import ListWatch

log = logging.getLogger("wva.scaler.config")

OnData = Callable[[Mapping[str, str] | None], None]


def file_data(text: str) -> dict[str, str]:
    """A file holds either a ConfigMap manifest or its ``data`` mapping; values may be YAML text or
    mappings (written inline for convenience)."""
    loaded = yaml.safe_load(text) or {}
    if not isinstance(loaded, dict):
        raise ValueError("the saturation config file must be a YAML mapping")
    if loaded.get("kind") == "ConfigMap":
        loaded = loaded.get("data") or {}
    return {str(k): v if isinstance(v, str) else yaml.safe_dump(v) for k, v in loaded.items()}


async def poll_file(path: Path, on_data: OnData, *, interval: float = 5.0) -> None:
    """Reload the file when its modification time changes."""
    seen: float | None = None

    def read_if_changed() -> tuple[float, str | None]:
        mtime = path.stat().st_mtime
        return mtime, (path.read_text() if mtime != seen else None)

    while True:
        try:
            seen, text = await asyncio.to_thread(read_if_changed)
            if text is not None:
                on_data(file_data(text))
        except (OSError, ValueError, yaml.YAMLError) as exc:
            log.error("cannot read saturation config %s: %s (keeping the configuration in force)", path, exc)
        await asyncio.sleep(interval)


class _ConfigMapSink:
    """The one ConfigMap's data to ``on_data`` as the list-then-watch sees it (None: it is gone)."""

    def __init__(self, on_data: OnData) -> None:
        self._on_data = on_data

    def listed(self, kind: str, namespace: str | None, items: list[dict[str, Any]], *, expired: bool) -> None:
        self._on_data(_data(items[0]) if items else None)

    def changed(self, kind: str, event_type: str, obj: dict[str, Any]) -> None:
        self._on_data(None if event_type == "DELETED" else _data(obj))


def _data(obj: dict[str, Any]) -> dict[str, str]:
    data = kube.as_mapping(obj.get("data"))
    return {str(k): v for k, v in data.items() if isinstance(v, str)}


async def watch_configmap(api: client.ApiClient, namespace: str, name: str, on_data: OnData) -> None:
    """List, then watch, one ConfigMap (``fieldSelector=metadata.name=<name>``, which RBAC allows by
    ``resourceNames``) with the shared list-then-watch loop and its error policy: transient failures
    are retried; a 403 (the Role is missing) stops the scaler loudly instead of deciding without it."""
    core = client.CoreV1Api(api)

    async def listing(**kwargs: Any) -> Any:
        return await core.list_namespaced_config_map(namespace, **kwargs)

    watch = ListWatch(
        "configmap",
        listing,
        namespace,
        _ConfigMapSink(on_data),
        field_selector=f"metadata.name={name}",
        on_restart=lambda kind, reason: telemetry.WATCH_RESTARTS.labels(kind=kind, reason=reason).inc(),
    )
    await watch.run()
