"""Object builders shared by the emulator's integration tests."""

from __future__ import annotations

from typing import Any


def deployment(name: str, *, replicas: int = 1, image: str = "vllm/vllm-openai:v0.8", labels: dict[str, str] | None = None) -> dict[str, Any]:
    pod_labels = {"app": name, **(labels or {})}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": dict(pod_labels)},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {"containers": [{"name": "vllm", "image": image, "ports": [{"name": "http", "containerPort": 8000}]}]},
            },
        },
    }


def variant_autoscaling(name: str, *, target: str | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "llmd.ai/v1alpha1",
        "kind": "VariantAutoscaling",
        "metadata": {"name": name},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target or name},
            "modelID": "meta/llama-3.1-8b",
            **spec,
        },
    }
