"""Watches through kubernetes_asyncio.watch.Watch: from a resourceVersion, 410 then re-list, bookmarks,
selectors, timeouts and dropped connections."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from services.sandbox.kubeapi import KubeApiEmulator


def _cm(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}}


async def _collect(stream: watch.Watch, count: int) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    async with asyncio.timeout(5):
        async for event in stream:
            obj = event["raw_object"]
            out.append((event["type"], obj["metadata"].get("name", "")))
            if len(out) == count:
                break
    return out


async def test_watch_from_list_resource_version_sees_only_later_changes(kube_client: client.ApiClient) -> None:
    core = client.CoreV1Api(kube_client)
    await core.create_namespaced_config_map("default", _cm("before"))
    listed = await core.list_namespaced_config_map("default")
    await core.create_namespaced_config_map("default", _cm("after"))
    await core.patch_namespaced_config_map("after", "default", {"data": {"k": "v"}})
    await core.delete_namespaced_config_map("before", "default")
    w = watch.Watch()
    events = await _collect(
        w.stream(core.list_namespaced_config_map, "default", resource_version=listed.metadata.resource_version, timeout_seconds=5),
        3,
    )
    await w.close()
    assert events == [("ADDED", "after"), ("MODIFIED", "after"), ("DELETED", "before")]


async def test_watch_without_resource_version_starts_with_current_state_then_live(kube_client: client.ApiClient) -> None:
    core = client.CoreV1Api(kube_client)
    await core.create_namespaced_config_map("default", _cm("existing"))
    w = watch.Watch()
    stream = w.stream(core.list_namespaced_config_map, "default", timeout_seconds=5)

    async def later() -> None:
        await asyncio.sleep(0.05)
        await core.create_namespaced_config_map("default", _cm("live"))

    task = asyncio.create_task(later())
    events = await _collect(stream, 2)
    await task
    await w.close()
    assert events == [("ADDED", "existing"), ("ADDED", "live")]


async def test_expired_resource_version_gives_410_then_relist_works(
    kube_api: KubeApiEmulator, kube_client: client.ApiClient
) -> None:
    core = client.CoreV1Api(kube_client)
    old = (await core.list_namespaced_config_map("default")).metadata.resource_version
    await core.create_namespaced_config_map("default", _cm("a"))
    kube_api.faults.compact()
    w = watch.Watch()
    with pytest.raises(ApiException) as err:
        await _collect(w.stream(core.list_namespaced_config_map, "default", resource_version=old, timeout_seconds=5), 1)
    assert err.value.status == 410
    await w.close()
    relisted = await core.list_namespaced_config_map("default")
    assert [c.metadata.name for c in relisted.items] == ["a"]
    w = watch.Watch()
    stream = w.stream(core.list_namespaced_config_map, "default", resource_version=relisted.metadata.resource_version, timeout_seconds=5)
    await core.create_namespaced_config_map("default", _cm("b"))
    assert await _collect(stream, 1) == [("ADDED", "b")]
    await w.close()


async def test_bounded_history_expires_old_versions(tmp_path: Any) -> None:
    from tests.fixtures.cluster import api_client_for

    async with KubeApiEmulator(history_limit=3) as small:
        api = await api_client_for(small.write_kubeconfig(tmp_path / "kubeconfig"))
        try:
            core = client.CoreV1Api(api)
            old = (await core.list_namespaced_config_map("default")).metadata.resource_version
            for i in range(4):
                await core.create_namespaced_config_map("default", _cm(f"c{i}"))
            recent = str(small.store.resource_version - 1)
            w = watch.Watch()
            with pytest.raises(ApiException) as err:
                await _collect(w.stream(core.list_namespaced_config_map, "default", resource_version=old, timeout_seconds=5), 1)
            await w.close()
            assert err.value.status == 410
            w = watch.Watch()
            events = await _collect(
                w.stream(core.list_namespaced_config_map, "default", resource_version=recent, timeout_seconds=5), 1
            )
            await w.close()
            assert events == [("ADDED", "c3")]
        finally:
            await api.close()


async def test_bookmarks_carry_the_current_resource_version(kube_api: KubeApiEmulator, kube_client: client.ApiClient) -> None:
    core = client.CoreV1Api(kube_client)
    rv = (await core.list_namespaced_config_map("default")).metadata.resource_version
    await core.create_namespaced_pod("other", {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}})
    w = watch.Watch()
    stream = w.stream(
        core.list_namespaced_config_map, "default", resource_version=rv, allow_watch_bookmarks=True, timeout_seconds=5
    )
    async with asyncio.timeout(3):
        event = await stream.__anext__()
    await w.close()
    assert event["type"] == "BOOKMARK"
    assert int(event["raw_object"]["metadata"]["resourceVersion"]) == kube_api.store.resource_version
    assert w.resource_version == str(kube_api.store.resource_version)


async def test_watch_with_label_selector_reports_objects_leaving_the_selection(kube_client: client.ApiClient) -> None:
    core = client.CoreV1Api(kube_client)
    rv = (await core.list_namespaced_config_map("default")).metadata.resource_version
    await core.create_namespaced_config_map("default", _cm("x", tier="gpu"))
    await core.create_namespaced_config_map("default", _cm("y", tier="cpu"))
    await core.patch_namespaced_config_map("x", "default", {"metadata": {"labels": {"tier": "cpu"}}})
    await core.patch_namespaced_config_map("y", "default", {"metadata": {"labels": {"tier": "gpu"}}})
    w = watch.Watch()
    events = await _collect(
        w.stream(core.list_namespaced_config_map, "default", label_selector="tier=gpu", resource_version=rv, timeout_seconds=5), 3
    )
    await w.close()
    assert events == [("ADDED", "x"), ("DELETED", "x"), ("ADDED", "y")]


async def test_all_namespace_watch_and_server_timeout(kube_client: client.ApiClient) -> None:
    core = client.CoreV1Api(kube_client)
    rv = (await core.list_config_map_for_all_namespaces()).metadata.resource_version
    await core.create_namespaced_config_map("ns1", _cm("a"))
    await core.create_namespaced_config_map("ns2", _cm("b"))
    w = watch.Watch()
    seen = []
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(5):
        async for event in w.stream(core.list_config_map_for_all_namespaces, resource_version=rv, timeout_seconds=1):
            seen.append((event["raw_object"]["metadata"]["namespace"], event["raw_object"]["metadata"]["name"]))
    await w.close()
    assert seen == [("ns1", "a"), ("ns2", "b")]
    assert 0.9 <= loop.time() - started < 3, "the server ends the watch after timeoutSeconds"


async def test_dropped_watch_ends_the_stream_and_resumes_from_last_version(
    kube_api: KubeApiEmulator, kube_client: client.ApiClient
) -> None:
    core = client.CoreV1Api(kube_client)
    rv = (await core.list_namespaced_config_map("default")).metadata.resource_version
    w = watch.Watch()
    stream = w.stream(core.list_namespaced_config_map, "default", resource_version=rv)  # watch forever: reconnects
    await core.create_namespaced_config_map("default", _cm("one"))
    assert await _collect(stream, 1) == [("ADDED", "one")]
    assert kube_api.faults.drop_watches() == 1
    await core.create_namespaced_config_map("default", _cm("two"))
    assert await _collect(stream, 1) == [("ADDED", "two")]
    await w.close()
    assert kube_api.faults.count("watch", r"/configmaps$") == 2


async def test_changes_queued_while_a_bookmark_is_due_are_still_delivered(
    kube_api: KubeApiEmulator, kube_client: client.ApiClient
) -> None:
    """Regression: with a bookmark always due, the stream once waited with a zero timeout that never
    took the queued change, and went silent for good."""
    kube_api.server.bookmark_interval = 0.0
    core = client.CoreV1Api(kube_client)
    rv = (await core.list_namespaced_config_map("default")).metadata.resource_version
    w = watch.Watch()
    stream = w.stream(
        core.list_namespaced_config_map, "default", resource_version=rv, allow_watch_bookmarks=True, timeout_seconds=5
    )
    async with asyncio.timeout(3):
        first = await stream.__anext__()  # the watch is open (a bookmark: one is always due)
    assert first["type"] == "BOOKMARK"
    for i in range(3):  # now the changes reach the open stream through its queue, not history
        await core.create_namespaced_config_map("default", _cm(f"queued-{i}"))
    names: list[str] = []
    async with asyncio.timeout(4):
        async for event in stream:
            if event["type"] == "ADDED":
                names.append(event["raw_object"]["metadata"]["name"])
            if len(names) == 3:
                break
    await w.close()
    assert names == ["queued-0", "queued-1", "queued-2"]
