from typing import Any

import pytest

from services.sandbox.kubeapi import errors, resources
from services.sandbox.kubeapi.store import Change, Store
from services.sandbox.kubeapi.validation import Admission

VA: dict[str, Any] = {
    "metadata": {"name": "va1", "namespace": "ns"},
    "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "d"}, "modelID": "m"},
}


@pytest.fixture
def store() -> Store:
    return Store(admission=Admission(), history_limit=5)


def test_generation_bumps_on_spec_changes_only(store: Store) -> None:
    va = store.create("variantautoscalings", VA)
    assert va["metadata"]["generation"] == 1
    va = store.patch("va", "ns", "va1", {"metadata": {"labels": {"x": "y"}}})
    assert va["metadata"]["generation"] == 1
    va = store.patch("va", "ns", "va1", {"status": {"actuation": {"applied": True}}}, subresource="status")
    assert va["metadata"]["generation"] == 1
    assert va["status"] == {"actuation": {"applied": True}}
    va = store.patch("va", "ns", "va1", {"spec": {"maxReplicas": 4}})
    assert va["metadata"]["generation"] == 2


def test_resource_version_is_cluster_wide_and_stale_updates_conflict(store: Store) -> None:
    first = store.create("configmaps", {"metadata": {"name": "a", "namespace": "ns"}, "data": {"k": "1"}})
    second = store.create("configmaps", {"metadata": {"name": "b", "namespace": "ns"}})
    assert int(second["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])
    store.update("configmaps", {**first, "data": {"k": "2"}})
    with pytest.raises(errors.ApiError) as err:
        store.update("configmaps", {**first, "data": {"k": "3"}})
    assert err.value.code == 409
    assert store.get("configmaps", "ns", "a")["data"] == {"k": "2"}


def test_no_op_update_keeps_resource_version(store: Store) -> None:
    cm = store.create("configmaps", {"metadata": {"name": "a", "namespace": "ns"}, "data": {"k": "1"}})
    again = store.update("configmaps", cm)
    assert again["metadata"]["resourceVersion"] == cm["metadata"]["resourceVersion"]


def test_a_delete_whose_preconditions_do_not_hold_conflicts_and_keeps_the_object(store: Store) -> None:
    lease = {"metadata": {"name": "wva-scaler-0", "namespace": "ns"}, "spec": {"holderIdentity": "a-1"}}
    first = store.create("leases", lease)
    store.update("leases", {**first, "spec": {"holderIdentity": "b-1"}})
    for preconditions in ({"resourceVersion": first["metadata"]["resourceVersion"]}, {"uid": "another"}):
        with pytest.raises(errors.ApiError) as err:
            store.delete("leases", "ns", "wva-scaler-0", preconditions=preconditions)
        assert err.value.code == 409 and "Precondition failed" in err.value.message
    current = store.get("leases", "ns", "wva-scaler-0")
    assert current["spec"]["holderIdentity"] == "b-1"
    store.delete("leases", "ns", "wva-scaler-0", preconditions={"resourceVersion": current["metadata"]["resourceVersion"]})
    assert store.find("leases", "ns", "wva-scaler-0") is None


def test_history_is_bounded_and_older_versions_expire(store: Store) -> None:
    start = store.resource_version
    for i in range(10):
        store.create("configmaps", {"metadata": {"name": f"c{i}", "namespace": "ns"}})
    with pytest.raises(errors.ApiError) as err:
        store.history_since(start, resources.CONFIGMAPS)
    assert err.value.code == 410
    recent = store.history_since(store.resource_version - 5, resources.CONFIGMAPS)
    assert [c.name for c in recent] == ["c5", "c6", "c7", "c8", "c9"]


def test_listeners_see_every_change_until_removed(store: Store) -> None:
    seen: list[Change] = []
    remove = store.add_listener(seen.append)
    store.create("configmaps", {"metadata": {"name": "a", "namespace": "ns"}})
    store.delete("configmaps", "ns", "a")
    remove()
    store.create("configmaps", {"metadata": {"name": "b", "namespace": "ns"}})
    assert [(c.type, c.name) for c in seen if c.resource.plural == "configmaps"] == [("ADDED", "a"), ("DELETED", "a")]


def test_deleting_a_namespace_deletes_its_objects(store: Store) -> None:
    store.create("configmaps", {"metadata": {"name": "a", "namespace": "ns"}})
    store.delete("namespaces", None, "ns")
    with pytest.raises(errors.ApiError) as err:
        store.get("configmaps", "ns", "a")
    assert err.value.code == 404
