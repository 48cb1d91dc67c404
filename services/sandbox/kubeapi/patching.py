"""Patch bodies: JSON merge patch (RFC 7386), strategic merge patch and JSON patch (RFC 6902).

Strategic merge here is merge patch plus one Kubernetes rule that matters for clients: lists of
objects keyed by `name` (containers, ports, env) or `type` (conditions) merge item by item.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import yaml

from services.sandbox.kubeapi import errors

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, APPLY_PATCH)

_MERGE_KEYS = ("name", "type", "containerPort")


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _merge_key(items: list[Any]) -> str | None:
    for key in _MERGE_KEYS:
        if items and all(isinstance(i, dict) and key in i for i in items):
            return key
    return None


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    if isinstance(patch, list) and isinstance(target, list):
        key = _merge_key(target + patch)
        if key is None:
            return copy.deepcopy(patch)
        merged = [copy.deepcopy(i) for i in target]
        index = {item[key]: n for n, item in enumerate(merged)}
        for item in patch:
            if item.get("$patch") == "delete":
                merged = [m for m in merged if m[key] != item[key]]
                index = {m[key]: n for n, m in enumerate(merged)}
            elif item[key] in index:
                merged[index[item[key]]] = strategic_merge_patch(merged[index[item[key]]], item)
            else:
                index[item[key]] = len(merged)
                merged.append(copy.deepcopy(item))
        return merged
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise errors.ApiError(422, f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, tokens: list[str], path: str) -> Any:
    current = doc
    for token in tokens[:-1]:
        if isinstance(current, dict) and token in current:
            current = current[token]
        elif isinstance(current, list) and token.isdigit() and int(token) < len(current):
            current = current[int(token)]
        else:
            raise errors.ApiError(422, f"json patch: path {path!r} does not exist")
    return current


def _get(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return doc
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent[int(last)]
    raise errors.ApiError(422, f"json patch: path {path!r} does not exist")


def _remove(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent.pop(int(last))
    raise errors.ApiError(422, f"json patch: cannot remove {path!r}: it does not exist")


def _add(doc: Any, path: str, value: Any) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent):
            parent.insert(int(last), value)
        else:
            raise errors.ApiError(422, f"json patch: index out of range in {path!r}")
    else:
        raise errors.ApiError(422, f"json patch: cannot add at {path!r}")
    return doc


def json_patch(target: Any, operations: Any) -> Any:
    if not isinstance(operations, list):
        raise errors.bad_request("json patch body must be a list of operations")
    doc = copy.deepcopy(target)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise errors.bad_request(f"invalid json patch operation {op!r}")
        kind, path = op["op"], op["path"]
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)
            if _pointer(path):
                _remove(doc, path)
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "move":
            value = _remove(doc, op["from"])
            doc = _add(doc, path, value)
        elif kind == "copy":
            doc = _add(doc, path, copy.deepcopy(_get(doc, op["from"])))
        elif kind == "test":
            if _get(doc, path) != op.get("value"):
                raise errors.ApiError(422, f"json patch: test failed at {path!r}")
        else:
            raise errors.bad_request(f"unknown json patch operation {kind!r}")
    return doc


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def apply(target: dict[str, Any], body: bytes, content_type: str | None) -> dict[str, Any]:
    """Apply a patch body of the given Content-Type; server-side apply is approximated as a merge."""
    kind = media_type(content_type)
    if kind not in PATCH_TYPES:
        raise errors.ApiError(415, f"the body of the request was in an unknown format - accepted media types include: {', '.join(PATCH_TYPES)}")
    try:
        patch = yaml.safe_load(body) if kind == APPLY_PATCH else json.loads(body or b"null")
    except (ValueError, yaml.YAMLError) as exc:
        raise errors.bad_request(f"error decoding patch: {exc}") from exc
    if kind == JSON_PATCH:
        result = json_patch(target, patch)
    elif kind == STRATEGIC_MERGE_PATCH:
        result = strategic_merge_patch(target, patch)
    else:
        result = merge_patch(target, patch)
    if not isinstance(result, dict):
        raise errors.ApiError(422, "patch did not produce an object")
    return result
