"""kubernetes-asyncio against the emulator: CRUD, conflicts, errors, selectors, status subresources."""

from __future__ import annotations

import json

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from services.sandbox.kubeapi import KubeApiEmulator
from tests.integration.kubeapi.objects import deployment, variant_autoscaling

VA_GROUP, VA_VERSION, VA_PLURAL = "llmd.ai", "v1alpha1", "variantautoscalings"
# kubernetes-asyncio sends custom-object patches as json-patch unless told otherwise (a real server
# rejects a dict body under that type too), so merge patches name their content type.
MERGE = "application/merge-patch+json"


def _status(exc: ApiException) -> dict[str, object]:
    body: dict[str, object] = json.loads(exc.body)
    return body


async def test_create_get_list_delete_configmaps(kube_client: client.ApiClient) -> None:
    core = client.CoreV1Api(kube_client)
    created = await core.create_namespaced_config_map("team-a", {"metadata": {"name": "cfg"}, "data": {"k": "v"}})
    assert created.metadata.uid and created.metadata.creation_timestamp is not None
    listed = await core.list_config_map_for_all_namespaces()
    assert [c.metadata.name for c in listed.items] == ["cfg"]
    assert int(listed.metadata.resource_version) >= int(created.metadata.resource_version)
    got = await core.read_namespaced_config_map("cfg", "team-a")
    assert got.data == {"k": "v"}
    await core.delete_namespaced_config_map("cfg", "team-a")
    with pytest.raises(ApiException) as err:
        await core.read_namespaced_config_map("cfg", "team-a")
    assert err.value.status == 404
    assert _status(err.value)["reason"] == "NotFound"


async def test_create_existing_is_409_already_exists(kube_client: client.ApiClient) -> None:
    core = client.CoreV1Api(kube_client)
    await core.create_namespaced_config_map("default", {"metadata": {"name": "cfg"}})
    with pytest.raises(ApiException) as err:
        await core.create_namespaced_config_map("default", {"metadata": {"name": "cfg"}})
    assert err.value.status == 409
    assert _status(err.value)["reason"] == "AlreadyExists"


async def test_update_with_stale_resource_version_is_409_conflict(kube_client: client.ApiClient) -> None:
    core = client.CoreV1Api(kube_client)
    original = await core.create_namespaced_config_map("default", {"metadata": {"name": "cfg"}, "data": {"n": "1"}})
    fresh = await core.read_namespaced_config_map("cfg", "default")
    fresh.data = {"n": "2"}
    await core.replace_namespaced_config_map("cfg", "default", fresh)
    original.data = {"n": "3"}
    with pytest.raises(ApiException) as err:
        await core.replace_namespaced_config_map("cfg", "default", original)
    assert err.value.status == 409
    assert _status(err.value)["reason"] == "Conflict"
    assert (await core.read_namespaced_config_map("cfg", "default")).data == {"n": "2"}


async def test_invalid_objects_are_422_with_a_status_message(kube_client: client.ApiClient) -> None:
    apps = client.AppsV1Api(kube_client)
    bad = deployment("web")
    bad["spec"]["selector"] = {"matchLabels": {"app": "other"}}
    with pytest.raises(ApiException) as err:
        await apps.create_namespaced_deployment("default", bad)
    assert err.value.status == 422
    status = _status(err.value)
    assert status["kind"] == "Status" and status["reason"] == "Invalid"
    assert "selector" in str(status["message"])


async def test_label_and_field_selectors(kube_client: client.ApiClient) -> None:
    core = client.CoreV1Api(kube_client)
    for name, labels in [("a", {"tier": "gpu", "model": "llama"}), ("b", {"tier": "cpu"}), ("c", {"tier": "tpu"})]:
        await core.create_namespaced_config_map("default", {"metadata": {"name": name, "labels": labels}})

    async def names(**kwargs: str) -> list[str]:
        listed = await core.list_namespaced_config_map("default", **kwargs)
        return [c.metadata.name for c in listed.items]

    assert await names(label_selector="tier=gpu") == ["a"]
    assert await names(label_selector="tier!=gpu") == ["b", "c"]
    assert await names(label_selector="tier in (gpu,tpu)") == ["a", "c"]
    assert await names(label_selector="tier notin (gpu,tpu)") == ["b"]
    assert await names(label_selector="model") == ["a"]
    assert await names(label_selector="!model") == ["b", "c"]
    assert await names(field_selector="metadata.name=b") == ["b"]
    assert await names(field_selector="metadata.namespace=default,metadata.name!=b") == ["a", "c"]
    with pytest.raises(ApiException) as err:
        await names(label_selector="tier in (gpu")
    assert err.value.status == 400


async def test_va_generation_and_status_subresource(kube_client: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(kube_client)
    va = await custom.create_namespaced_custom_object(VA_GROUP, VA_VERSION, "llm", VA_PLURAL, variant_autoscaling("va1"))
    assert va["metadata"]["generation"] == 1
    assert va["spec"]["variantCost"] == "10.0" and va["spec"]["minReplicas"] == 1

    status = {"status": {"desiredOptimizedAlloc": {"accelerator": "A100", "numReplicas": 3}, "actuation": {"applied": True}}}
    patched = await custom.patch_namespaced_custom_object_status(VA_GROUP, VA_VERSION, "llm", VA_PLURAL, "va1", status, _content_type=MERGE)
    assert patched["status"]["desiredOptimizedAlloc"]["numReplicas"] == 3
    assert patched["metadata"]["generation"] == 1

    # The main endpoint ignores status; /status ignores everything but status.
    patched["spec"]["maxReplicas"] = 6
    patched["status"] = {"actuation": {"applied": False}}
    replaced = await custom.replace_namespaced_custom_object(VA_GROUP, VA_VERSION, "llm", VA_PLURAL, "va1", patched)
    assert replaced["metadata"]["generation"] == 2
    assert replaced["status"]["actuation"] == {"applied": True}
    replaced["spec"]["maxReplicas"] = 9
    replaced["status"]["actuation"] = {"applied": False}
    after = await custom.replace_namespaced_custom_object_status(VA_GROUP, VA_VERSION, "llm", VA_PLURAL, "va1", replaced)
    assert after["spec"]["maxReplicas"] == 6
    assert after["status"]["actuation"] == {"applied": False}
    assert after["metadata"]["generation"] == 2

    labelled = await custom.patch_namespaced_custom_object(
        VA_GROUP, VA_VERSION, "llm", VA_PLURAL, "va1", {"metadata": {"labels": {"team": "a"}}}, _content_type=MERGE
    )
    assert labelled["metadata"]["generation"] == 2


async def test_va_validation_through_http(kube_client: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(kube_client)
    missing_model = variant_autoscaling("va1")
    del missing_model["spec"]["modelID"]
    with pytest.raises(ApiException) as err:
        await custom.create_namespaced_custom_object(VA_GROUP, VA_VERSION, "llm", VA_PLURAL, missing_model)
    assert err.value.status == 422
    assert "spec.modelID" in _status(err.value)["message"]  # type: ignore[operator]

    with pytest.raises(ApiException) as err:
        await custom.create_namespaced_custom_object(
            VA_GROUP, VA_VERSION, "llm", VA_PLURAL, variant_autoscaling("va2", minReplicas=4, maxReplicas=2)
        )
    assert err.value.status == 422
    assert "minReplicas must be less than or equal to maxReplicas" in _status(err.value)["message"]  # type: ignore[operator]

    await custom.create_namespaced_custom_object(VA_GROUP, VA_VERSION, "llm", VA_PLURAL, variant_autoscaling("va3", maxReplicas=2))
    with pytest.raises(ApiException) as err:
        await custom.patch_namespaced_custom_object(VA_GROUP, VA_VERSION, "llm", VA_PLURAL, "va3", {"spec": {"minReplicas": 3}}, _content_type=MERGE)
    assert err.value.status == 422


async def test_deployment_status_subresource_and_generation(kube_api: KubeApiEmulator, kube_client: client.ApiClient) -> None:
    apps = client.AppsV1Api(kube_client)
    await apps.create_namespaced_deployment("default", deployment("web", replicas=0))
    scaled = await apps.patch_namespaced_deployment("web", "default", {"metadata": {"annotations": {"a": "b"}}})
    assert scaled.metadata.generation == 1
    bumped = await apps.patch_namespaced_deployment("web", "default", {"spec": {"replicas": 0, "paused": True}})
    assert bumped.metadata.generation == 2
    # /status takes status only (the controller owns it and will rewrite it; the response shows the write).
    written = await apps.patch_namespaced_deployment_status(
        "web", "default", {"spec": {"replicas": 5}, "status": {"collisionCount": 7}}
    )
    assert written.status.collision_count == 7
    assert written.spec.replicas == 0 and written.metadata.generation == 2


async def test_unknown_resource_and_bad_json_body(kube_api: KubeApiEmulator, kube_client: client.ApiClient) -> None:
    with pytest.raises(ApiException) as err:
        await kube_client.call_api("/apis/apps/v1/namespaces/default/statefulsets", "GET", auth_settings=["BearerToken"])
    assert err.value.status == 404
    with pytest.raises(ApiException) as err:
        await kube_client.call_api(
            "/api/v1/namespaces/default/configmaps", "POST", body="{not json",
            header_params={"Content-Type": "application/json"}, auth_settings=["BearerToken"],
        )
    assert err.value.status == 400
