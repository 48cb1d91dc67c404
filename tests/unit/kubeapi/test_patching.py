import pytest

from services.sandbox.kubeapi import errors, patching


def test_merge_patch_sets_nested_and_null_deletes() -> None:
    target = {"spec": {"replicas": 1, "paused": True}, "metadata": {"labels": {"a": "1"}}}
    result = patching.merge_patch(target, {"spec": {"replicas": 3, "paused": None}})
    assert result == {"spec": {"replicas": 3}, "metadata": {"labels": {"a": "1"}}}
    assert target["spec"]["replicas"] == 1, "the target must not be mutated"


def test_strategic_merge_merges_containers_by_name() -> None:
    target = {"containers": [{"name": "vllm", "image": "v1", "args": ["x"]}, {"name": "sidecar", "image": "s"}]}
    result = patching.strategic_merge_patch(target, {"containers": [{"name": "vllm", "image": "v2"}]})
    assert result["containers"] == [{"name": "vllm", "image": "v2", "args": ["x"]}, {"name": "sidecar", "image": "s"}]


def test_merge_patch_replaces_lists_whole() -> None:
    target = {"containers": [{"name": "vllm", "image": "v1"}, {"name": "sidecar"}]}
    result = patching.merge_patch(target, {"containers": [{"name": "vllm", "image": "v2"}]})
    assert result["containers"] == [{"name": "vllm", "image": "v2"}]


def test_json_patch_operations() -> None:
    doc = {"spec": {"replicas": 1, "list": [1, 2]}, "metadata": {"labels": {"a/b": "x"}}}
    ops = [
        {"op": "test", "path": "/spec/replicas", "value": 1},
        {"op": "replace", "path": "/spec/replicas", "value": 4},
        {"op": "add", "path": "/spec/list/-", "value": 3},
        {"op": "add", "path": "/spec/list/0", "value": 0},
        {"op": "remove", "path": "/metadata/labels/a~1b"},
        {"op": "copy", "from": "/spec/replicas", "path": "/spec/copied"},
        {"op": "move", "from": "/spec/copied", "path": "/spec/moved"},
    ]
    assert patching.json_patch(doc, ops) == {
        "spec": {"replicas": 4, "list": [0, 1, 2, 3], "moved": 4},
        "metadata": {"labels": {}},
    }


def test_json_patch_failed_test_and_missing_path_are_invalid() -> None:
    with pytest.raises(errors.ApiError) as failed:
        patching.json_patch({"a": 1}, [{"op": "test", "path": "/a", "value": 2}])
    assert failed.value.code == 422
    with pytest.raises(errors.ApiError) as missing:
        patching.json_patch({"a": 1}, [{"op": "replace", "path": "/b", "value": 2}])
    assert missing.value.code == 422


def test_unknown_patch_content_type_is_415() -> None:
    with pytest.raises(errors.ApiError) as err:
        patching.apply({}, b"{}", "text/plain")
    assert err.value.code == 415
