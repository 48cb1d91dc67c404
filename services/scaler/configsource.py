"""Where the saturation configuration comes from: the ConfigMap (watched) or a YAML file (polled).

Both hand the raw ``data`` mapping (key -> YAML text, as in the ConfigMap) to a callback; parsing and
"keep the last valid one" live in the pure ``config.apply_configmap``. ``None`` means the ConfigMap
does not exist (defaults apply).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from pathlib import Path

import yaml
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

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


async def watch_configmap(api: client.ApiClient, namespace: str, name: str, on_data: OnData) -> None:
    """List, then watch one ConfigMap; re-list on 410, back off (bounded, jittered) on errors."""
    core = client.CoreV1Api(api)
    selector = f"metadata.name={name}"
    backoff = 0.5
    while True:
        try:
            listing = await core.list_namespaced_config_map(namespace, field_selector=selector)
            items = listing.items or []
            on_data(dict(items[0].data or {}) if items else None)
            version = listing.metadata.resource_version
            backoff = 0.5
            while True:
                async with watch.Watch() as w:
                    async for event in w.stream(
                        core.list_namespaced_config_map,
                        namespace,
                        field_selector=selector,
                        resource_version=version,
                        timeout_seconds=300,
                        allow_watch_bookmarks=True,
                    ):
                        # raw_object: BOOKMARK events are not deserialized into V1ConfigMap.
                        raw = event["raw_object"]
                        version = raw["metadata"]["resourceVersion"]
                        if event["type"] == "DELETED":
                            on_data(None)
                        elif event["type"] in ("ADDED", "MODIFIED"):
                            on_data(dict(raw.get("data") or {}))
        except ApiException as exc:
            if exc.status == 410:
                log.info("ConfigMap watch expired; re-listing")
                continue
            if exc.status in (401, 403):
                log.error("not allowed to read ConfigMap %s/%s: %s", namespace, name, exc.reason)
            else:
                log.warning("ConfigMap watch failed (HTTP %s); retrying", exc.status)
        except (OSError, TimeoutError) as exc:
            log.warning("ConfigMap watch connection failed: %s; retrying", exc)
        await asyncio.sleep(backoff + random.uniform(0, backoff / 2))
        backoff = min(backoff * 2, 30.0)
