"""K3s tier: the same contracts against a real Kubernetes API server, where Docker exists.

These are the only tests allowed to skip in CI (marker ``docker``): they need a Docker engine to run
K3s through testcontainers. They check what the emulated API cannot prove: that the shipped CRD and a
VA in WVA's shape are accepted by a real API server, and that the scaler's scale patch, status write
and Event are accepted there too.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes_asyncio import client

from services.scaler.actions import ScaleAction
from services.scaler.actuation import KubeActuator
from shared import kube

pytestmark = pytest.mark.docker
ROOT = Path(__file__).resolve().parents[2]


def _docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


@pytest.fixture(scope="module")
def k3s_kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if not _docker_available():
        pytest.skip("no Docker engine: the K3s tier runs only where Docker does")
    from testcontainers.community.k3s import K3SContainer  # type: ignore[import-not-found]

    with K3SContainer(image="rancher/k3s:v1.30.6-k3s1") as k3s:
        path = tmp_path_factory.mktemp("k3s") / "kubeconfig"
        path.write_text(k3s.config_yaml())
        yield path


def _kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), *args], input=stdin, capture_output=True, text=True, check=True
    )
    return result.stdout


WVA_SHAPED_VA = """
apiVersion: llmd.ai/v1alpha1
kind: VariantAutoscaling
metadata:
  name: llama-8b
  namespace: default
  labels:
    inference.optimization/acceleratorName: A100
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: llama-8b
  modelID: meta-llama/Llama-3.1-8B
  variantCost: "10.0"
"""

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: llama-8b, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: llama-8b}}
  template:
    metadata: {labels: {app: llama-8b}}
    spec:
      containers: [{name: pause, image: "registry.k8s.io/pause:3.9"}]
"""


def test_crd_and_wva_shaped_va_apply_to_a_real_api_server(k3s_kubeconfig: Path) -> None:
    _kubectl(k3s_kubeconfig, "apply", "-f", str(ROOT / "deploy/crd/variantautoscalings.llmd.ai.yaml"))
    _kubectl(k3s_kubeconfig, "wait", "--for=condition=Established", "crd/variantautoscalings.llmd.ai")
    _kubectl(k3s_kubeconfig, "apply", "-f", "-", stdin=WVA_SHAPED_VA)
    va = yaml.safe_load(_kubectl(k3s_kubeconfig, "get", "variantautoscaling", "llama-8b", "-o", "yaml"))
    assert va["spec"]["minReplicas"] == 1  # schema default applied by the real server


def test_scaler_actuation_is_accepted_by_a_real_api_server(k3s_kubeconfig: Path) -> None:
    _kubectl(k3s_kubeconfig, "apply", "-f", "-", stdin=DEPLOYMENT)

    async def scenario() -> None:
        api = await kube.api_client(str(k3s_kubeconfig))
        try:
            actuator = KubeActuator(api)
            d = await client.AppsV1Api(api).read_namespaced_deployment("llama-8b", "default")
            action = ScaleAction(
                namespace="default", name="llama-8b", deployment="llama-8b", replicas=2,
                expected_generation=d.metadata.generation,
            )
            result = await actuator.scale(action)
            assert result.applied, result
            assert await actuator.write_status(
                "default", "llama-8b", {"desiredOptimizedAlloc": {"accelerator": "A100", "numReplicas": 2}}
            )
            await actuator.record_event(namespace="default", va="llama-8b", reason="ScaledUp", message="test")
        finally:
            await api.close()

    asyncio.run(scenario())
    assert _kubectl(k3s_kubeconfig, "get", "deploy", "llama-8b", "-o", "jsonpath={.spec.replicas}") == "2"
