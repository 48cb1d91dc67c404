"""What runs inside an emulated pod. The deployment controller calls `start` when it creates a pod and
`stop` when the pod goes away (scale-down, rollout, or a user's DELETE). The emulated vLLM servers
implement this Protocol; `NullRuntime` runs nothing.
"""

from __future__ import annotations

from typing import Any, Protocol


class PodRuntime(Protocol):
    async def start(self, pod: dict[str, Any]) -> int | None:
        """Start serving for `pod`; return the metrics port on 127.0.0.1, or None if it serves nothing."""
        ...

    async def stop(self, pod: dict[str, Any]) -> None: ...


class NullRuntime:
    async def start(self, pod: dict[str, Any]) -> int | None:
        return None

    async def stop(self, pod: dict[str, Any]) -> None:
        return None
