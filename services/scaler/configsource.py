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


WVA_NAME = "wva-saturation-scaling-config"  # WVA v0.9's name for the same ConfigMap


class _ConfigMaps:
    """The data of the ConfigMaps watched, in order of preference: the first that exists is in force
    (None: none of them exists). Each list-then-watch reports its own; a change is passed on only
    when the one in force changes."""

    def __init__(self, names: list[str], on_data: OnData) -> None:
        self._names = names
        self._data: dict[str, dict[str, str] | None] = dict.fromkeys(names)
        self._listed: set[str] = set()
        self._on_data = on_data

    def sink(self, name: str) -> _One:
        return _One(self, name)

    def update(self, name: str, data: dict[str, str] | None) -> None:
        self._data[name] = data
        self._listed.add(name)
        if self._listed >= set(self._names):  # every name listed once: the preference is known
            self._on_data(next((d for n in self._names if (d := self._data[n]) is not None), None))


class _One:
    """One ConfigMap's list-then-watch sink."""

    def __init__(self, maps: _ConfigMaps, name: str) -> None:
        self._maps, self._name = maps, name

    def listed(self, kind: str, namespace: str | None, items: list[dict[str, Any]], *, expired: bool) -> None:
        self._maps.update(self._name, _data(items[0]) if items else None)

    def changed(self, kind: str, event_type: str, obj: dict[str, Any]) -> None:
        self._maps.update(self._name, None if event_type == "DELETED" else _data(obj))


def _data(obj: dict[str, Any]) -> dict[str, str]:
    data = kube.as_mapping(obj.get("data"))
    return {str(k): v for k, v in data.items() if isinstance(v, str)}


async def watch_configmap(api: client.ApiClient, namespace: str, name: str, on_data: OnData) -> None:
    """List, then watch, the scaling ConfigMap — ``name``, or WVA v0.9's ``wva-saturation-scaling-config``
    when ``name`` does not exist — each by ``fieldSelector=metadata.name=<name>``, which RBAC allows by
    ``resourceNames``, with the shared list-then-watch loop and its error policy: transient failures
    are retried; a 403 (the Role is missing) stops the scaler loudly instead of deciding without it."""
    core = client.CoreV1Api(api)
    names = [name] if name == WVA_NAME else [name, WVA_NAME]
    maps = _ConfigMaps(names, on_data)

    async def listing(**kwargs: Any) -> Any:
        return await core.list_namespaced_config_map(namespace, **kwargs)

    watches = [
        ListWatch(
            "configmap",
            listing,
            namespace,
            maps.sink(one),
            field_selector=f"metadata.name={one}",
            on_restart=lambda kind, reason: telemetry.WATCH_RESTARTS.labels(kind=kind, reason=reason).inc(),
        )
        for one in names
    ]
    async with asyncio.TaskGroup() as tg:
        for watch in watches:
            tg.create_task(watch.run())
