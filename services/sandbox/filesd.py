"""Prometheus file-based service discovery: the ready pods' metrics endpoints as a JSON target list.

Prometheus re-reads the file when it changes. It must never see a half-written file, so each rewrite
goes to a temporary file in the same directory and is renamed over the old one (atomic on POSIX).
Labels `namespace` and `pod` are attached per target, as Kubernetes service discovery plus the usual
relabelling would, so PromQL written for a real cluster works unchanged.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, kw_only=True, order=True)
class ScrapeTarget:
    namespace: str
    pod: str
    address: str  # host:port


def render(targets: list[ScrapeTarget]) -> list[dict[str, Any]]:
    """The file_sd document: one group per target (labels differ per pod), sorted for stable diffs."""
    return [
        {"targets": [t.address], "labels": {"namespace": t.namespace, "pod": t.pod}} for t in sorted(targets)
    ]


def write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; Prometheus may run as another user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class FileSDWriter:
    """Keeps the file in step with a set of targets; rewrites only when the set changes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._targets: dict[tuple[str, str], ScrapeTarget] = {}
        self._written: list[dict[str, Any]] | None = None
        self.writes = 0

    def targets(self) -> list[ScrapeTarget]:
        return sorted(self._targets.values())

    def put(self, target: ScrapeTarget) -> None:
        self._targets[(target.namespace, target.pod)] = target
        self.flush()

    def discard(self, namespace: str, pod: str) -> None:
        if self._targets.pop((namespace, pod), None) is not None:
            self.flush()

    def flush(self) -> None:
        document = render(list(self._targets.values()))
        if document == self._written:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path, json.dumps(document, indent=2).encode() + b"\n")
        self._written = document
        self.writes += 1
