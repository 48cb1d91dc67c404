"""Server-side printing (meta.k8s.io/v1 Table) for `kubectl get`, with the columns a real cluster shows
and, for custom resources, the CRD's additionalPrinterColumns.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from services.sandbox.kubeapi import resources
from services.sandbox.kubeapi.resources import ResourceType

Cell = str | int | float | bool | None
Column = tuple[str, str, Callable[[dict[str, Any]], Cell]]

_FILTER = re.compile(r"^(?P<field>\w+)\[\?\(@\.(?P<key>\w+)==['\"](?P<value>[^'\"]*)['\"]\)\]$")


def wants_table(accept: str | None) -> bool:
    return bool(accept) and "as=Table" in (accept or "")


def age(obj: dict[str, Any]) -> str:
    created = obj["metadata"].get("creationTimestamp")
    if not created:
        return "<unknown>"
    then = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    seconds = max(0, int((datetime.now(UTC) - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def json_path(obj: Any, path: str) -> Cell:
    """The subset of JSONPath that printer columns use: `.a.b` and `.a[?(@.k=='v')].b`."""
    current: Any = obj
    for step in path.lstrip(".").split("."):
        m = _FILTER.match(step)
        if m:
            items = current.get(m["field"]) if isinstance(current, dict) else None
            current = next(
                (i for i in items or [] if isinstance(i, dict) and str(i.get(m["key"])) == m["value"]), None
            )
        else:
            current = current.get(step) if isinstance(current, dict) else None
        if current is None:
            return None
    return current if isinstance(current, str | int | float | bool) else str(current)


def _status(obj: dict[str, Any]) -> dict[str, Any]:
    status = obj.get("status")
    return status if isinstance(status, dict) else {}


def _pod_ready(pod: dict[str, Any]) -> str:
    statuses = _status(pod).get("containerStatuses") or []
    total = len((pod.get("spec") or {}).get("containers") or [])
    return f"{sum(1 for s in statuses if s.get('ready'))}/{total}"


_BUILTIN: dict[str, list[Column]] = {
    resources.PODS.key: [
        ("Ready", "string", _pod_ready),
        ("Status", "string", lambda o: _status(o).get("phase", "Pending")),
        ("Restarts", "string", lambda o: str(sum(s.get("restartCount", 0) for s in _status(o).get("containerStatuses") or []))),
        ("IP", "string", lambda o: _status(o).get("podIP", "<none>")),
    ],
    resources.DEPLOYMENTS.key: [
        ("Ready", "string", lambda o: f"{_status(o).get('readyReplicas', 0)}/{(o.get('spec') or {}).get('replicas', 0)}"),
        ("Up-to-date", "integer", lambda o: _status(o).get("updatedReplicas", 0)),
        ("Available", "integer", lambda o: _status(o).get("availableReplicas", 0)),
    ],
    resources.REPLICASETS.key: [
        ("Desired", "integer", lambda o: (o.get("spec") or {}).get("replicas", 0)),
        ("Current", "integer", lambda o: _status(o).get("replicas", 0)),
        ("Ready", "integer", lambda o: _status(o).get("readyReplicas", 0)),
    ],
    resources.NAMESPACES.key: [("Status", "string", lambda o: _status(o).get("phase", "Active"))],
    resources.CONFIGMAPS.key: [("Data", "integer", lambda o: len(o.get("data") or {}))],
}


def _path_cell(path: str) -> Callable[[dict[str, Any]], Cell]:
    return lambda obj: json_path(obj, path)


def _date_cell(path: str) -> Callable[[dict[str, Any]], Cell]:
    if path == ".metadata.creationTimestamp":
        return age
    return _path_cell(path)


def _columns(rtype: ResourceType, printer_columns: list[dict[str, Any]] | None) -> list[Column]:
    if printer_columns is not None:
        cols: list[Column] = []
        for col in printer_columns:
            path = col["jsonPath"]
            if col.get("type") == "date":
                cols.append((col["name"], "string", _date_cell(path)))
            else:
                cols.append((col["name"], col.get("type", "string"), _path_cell(path)))
        return cols
    return [*_BUILTIN.get(rtype.key, []), ("Age", "string", age)]


def table(
    rtype: ResourceType,
    objects: list[dict[str, Any]],
    *,
    resource_version: str,
    printer_columns: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    columns: list[Column] = [("Name", "string", lambda o: o["metadata"]["name"]), *_columns(rtype, printer_columns)]
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [
            {"name": name, "type": type_, "format": "name" if name == "Name" else "", "description": "", "priority": 0}
            for name, type_, _ in columns
        ],
        "rows": [
            {
                "cells": [get(obj) for _, _, get in columns],
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]},
            }
            for obj in objects
        ],
    }
