"""The deployments/scale subresource through kubernetes-asyncio, with every patch type."""

from __future__ import annotations

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from tests.integration.kubeapi.objects import deployment


async def test_get_scale_reports_replicas_and_selector_string(kube_client: client.ApiClient) -> None:
    apps = client.AppsV1Api(kube_client)
    await apps.create_namespaced_deployment("default", deployment("web", replicas=2))
    scale = await apps.read_namespaced_deployment_scale("web", "default")
    assert scale.kind == "Scale" and scale.api_version == "autoscaling/v1"
    assert scale.spec.replicas == 2
    assert scale.status.selector == "app=web"
    assert isinstance(scale.status.replicas, int)


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("application/merge-patch+json", {"spec": {"replicas": 3}}, 3),
        ("application/strategic-merge-patch+json", {"spec": {"replicas": 4}}, 4),
        ("application/json-patch+json", [{"op": "replace", "path": "/spec/replicas", "value": 5}], 5),
    ],
)
async def test_patch_scale_with_each_patch_type(
    kube_client: client.ApiClient, content_type: str, body: object, expected: int
) -> None:
    apps = client.AppsV1Api(kube_client)
    created = await apps.create_namespaced_deployment("default", deployment("web", replicas=1))
    scale = await apps.patch_namespaced_deployment_scale("web", "default", body, _content_type=content_type)
    assert scale.spec.replicas == expected
    after = await apps.read_namespaced_deployment("web", "default")
    assert after.spec.replicas == expected
    assert after.metadata.generation == created.metadata.generation + 1


async def test_replace_scale_checks_resource_version(kube_client: client.ApiClient) -> None:
    apps = client.AppsV1Api(kube_client)
    await apps.create_namespaced_deployment("default", deployment("web", replicas=1))
    scale = await apps.read_namespaced_deployment_scale("web", "default")
    scale.spec.replicas = 2
    updated = await apps.replace_namespaced_deployment_scale("web", "default", scale)
    assert updated.spec.replicas == 2
    scale.spec.replicas = 7  # still carries the old resourceVersion
    with pytest.raises(ApiException) as err:
        await apps.replace_namespaced_deployment_scale("web", "default", scale)
    assert err.value.status == 409
    assert (await apps.read_namespaced_deployment("web", "default")).spec.replicas == 2


async def test_negative_replicas_and_missing_deployment(kube_client: client.ApiClient) -> None:
    apps = client.AppsV1Api(kube_client)
    await apps.create_namespaced_deployment("default", deployment("web"))
    with pytest.raises(ApiException) as err:
        await apps.patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": -1}})
    assert err.value.status == 422
    with pytest.raises(ApiException) as err:
        await apps.patch_namespaced_deployment_scale("nope", "default", {"spec": {"replicas": 1}})
    assert err.value.status == 404
