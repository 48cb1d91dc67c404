"""Admission for writes: object names, a few built-in kinds' required fields, and custom resources
checked against their CRD's openAPIV3Schema (defaults applied first, then schema, then CEL rules).

CEL is not interpreted in general: each rule the shipped CRD uses has a Python twin below, and loading
a CRD whose rule has no twin fails loudly, so a new rule cannot be silently skipped.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from services.sandbox.kubeapi import errors, resources
from services.sandbox.kubeapi import selectors as sel
from services.sandbox.kubeapi.resources import ResourceType

# A copy of deploy/crd/ shipped in the package, so an installed wva finds it; deploy/crd/ stays the
# source and tests/unit/kubeapi/test_validation.py fails when the two differ.
DEFAULT_CRD_PATH = Path(__file__).parent / "variantautoscalings.llmd.ai.yaml"

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

Cause = tuple[str, str]


def _min_le_max(node: Mapping[str, Any]) -> bool:
    return "maxReplicas" not in node or node.get("minReplicas", 0) <= node["maxReplicas"]


CEL_RULES: dict[str, Callable[[Mapping[str, Any]], bool]] = {
    "!has(self.maxReplicas) || self.minReplicas <= self.maxReplicas": _min_le_max,
}


def apply_defaults(schema: Mapping[str, Any], value: Any) -> Any:
    """Fill `default`s of absent properties inside objects that are present, as the API server does."""
    if isinstance(value, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = apply_defaults(sub, value[name])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], v) for v in value]
    return value


def _cel_violations(schema: Mapping[str, Any], value: Any, path: str) -> list[Cause]:
    out: list[Cause] = []
    if isinstance(value, dict):
        for rule in schema.get("x-kubernetes-validations") or []:
            if not CEL_RULES[rule["rule"]](value):
                out.append((path, f"Invalid value: \"object\": {rule.get('message', rule['rule'])}"))
        for name, sub in (schema.get("properties") or {}).items():
            if name in value:
                out.extend(_cel_violations(sub, value[name], f"{path}.{name}" if path else name))
    return out


def _check_rules_known(schema: Mapping[str, Any]) -> None:
    for rule in schema.get("x-kubernetes-validations") or []:
        if rule["rule"] not in CEL_RULES:
            raise ValueError(f"CRD uses a CEL rule the emulator cannot evaluate: {rule['rule']!r}")
    for sub in (schema.get("properties") or {}).values():
        _check_rules_known(sub)
    if isinstance(schema.get("items"), dict):
        _check_rules_known(schema["items"])


class CrdSchema:
    """One served version of a CRD: its schema, printer columns, and the validator built from them."""

    def __init__(self, crd: Mapping[str, Any], version: str | None = None) -> None:
        versions = crd["spec"]["versions"]
        chosen = next((v for v in versions if v["name"] == version), None) if version else versions[0]
        if chosen is None:
            raise ValueError(f"CRD {crd['metadata']['name']} has no version {version}")
        self.crd = crd
        self.version: str = chosen["name"]
        self.schema: dict[str, Any] = chosen["schema"]["openAPIV3Schema"]
        self.printer_columns: list[dict[str, Any]] = list(chosen.get("additionalPrinterColumns") or [])
        _check_rules_known(self.schema)
        jsonschema.Draft7Validator.check_schema(self.schema)
        self._validator = jsonschema.Draft7Validator(self.schema)

    @classmethod
    def load(cls, path: Path = DEFAULT_CRD_PATH) -> CrdSchema:
        with path.open() as f:
            return cls(yaml.safe_load(f))

    def default(self, obj: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = apply_defaults(self.schema, obj)
        return result

    def violations(self, obj: Mapping[str, Any]) -> list[Cause]:
        causes: list[Cause] = []
        for err in sorted(self._validator.iter_errors(obj), key=lambda e: list(e.absolute_path)):
            where = ".".join(str(p) for p in err.absolute_path)
            if err.validator == "required":
                missing = err.message.split("'")[1] if "'" in err.message else ""
                causes.append((f"{where}.{missing}" if where else missing, "Required value"))
            else:
                causes.append((where, f"Invalid value: {err.message}"))
        if not causes:
            causes = _cel_violations(self.schema, obj, "")
        return causes


def _check_name(rtype: ResourceType, obj: Mapping[str, Any]) -> list[Cause]:
    name = (obj.get("metadata") or {}).get("name") or ""
    if not name:
        return [("metadata.name", "Required value: name or generateName is required")]
    pattern, limit = (_DNS_LABEL, 63) if rtype is resources.NAMESPACES else (_DNS_SUBDOMAIN, 253)
    if len(name) > limit or not pattern.match(name):
        return [("metadata.name", f'Invalid value: "{name}": must be a lowercase RFC 1123 name')]
    return []


def _check_deployment(obj: Mapping[str, Any]) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [("spec", "Required value")]
    causes: list[Cause] = []
    replicas = spec.get("replicas")
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        causes.append(("spec.replicas", f"Invalid value: {replicas!r}: must be greater than or equal to 0"))
    template = spec.get("template")
    if not isinstance(template, dict):
        causes.append(("spec.template", "Required value"))
        return causes
    containers = (template.get("spec") or {}).get("containers")
    if not isinstance(containers, list) or not containers:
        causes.append(("spec.template.spec.containers", "Required value"))
    selector = spec.get("selector")
    if not isinstance(selector, dict) or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        causes.append(("spec.selector", "Required value"))
        return causes
    try:
        matches = sel.from_label_selector_object(selector).matches((template.get("metadata") or {}).get("labels"))
    except (sel.SelectorError, KeyError, TypeError):
        return [*causes, ("spec.selector", "Invalid value: invalid label selector")]
    if not matches:
        causes.append(("spec.template.metadata.labels", "Invalid value: `selector` does not match template `labels`"))
    return causes


def _check_pod(obj: Mapping[str, Any]) -> list[Cause]:
    containers = (obj.get("spec") or {}).get("containers")
    if not isinstance(containers, list) or not containers:
        return [("spec.containers", "Required value")]
    return []


class Admission:
    """Defaults and validates every object before the store accepts it."""

    def __init__(self, *, crd_path: Path = DEFAULT_CRD_PATH) -> None:
        self.crds: dict[str, CrdSchema] = {resources.VARIANT_AUTOSCALINGS.key: CrdSchema.load(crd_path)}

    def default(self, rtype: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        crd = self.crds.get(rtype.key)
        if crd is not None:
            return crd.default(obj)
        if rtype is resources.DEPLOYMENTS:
            spec = obj.setdefault("spec", {})
            if isinstance(spec, dict):
                spec.setdefault("replicas", 1)
                spec.setdefault("revisionHistoryLimit", 10)
                spec.setdefault("progressDeadlineSeconds", 600)
                spec.setdefault(
                    "strategy",
                    {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                )
        return obj

    def validate(self, rtype: ResourceType, obj: dict[str, Any]) -> None:
        """Raise 422 Invalid with every cause found."""
        causes = _check_name(rtype, obj)
        crd = self.crds.get(rtype.key)
        if crd is not None:
            causes += crd.violations(obj)
        elif rtype is resources.DEPLOYMENTS:
            causes += _check_deployment(obj)
        elif rtype is resources.PODS:
            causes += _check_pod(obj)
        if causes:
            name = (obj.get("metadata") or {}).get("name") or ""
            raise errors.invalid(rtype.kind, rtype.group, name, causes)
