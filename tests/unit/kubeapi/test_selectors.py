import pytest

from services.sandbox.kubeapi import selectors as sel

LABELS = {"app": "vllm", "tier": "gpu", "model": "llama"}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("", True),
        ("app=vllm", True),
        ("app==vllm", True),
        ("app=router", False),
        ("app!=router", True),
        ("app!=vllm", False),
        ("missing!=x", True),
        ("tier in (gpu,cpu)", True),
        ("tier in (cpu)", False),
        ("tier notin (cpu, tpu)", True),
        ("tier notin (gpu)", False),
        ("missing notin (gpu)", True),
        ("model", True),
        ("missing", False),
        ("!missing", True),
        ("!model", False),
        ("app=vllm,tier in (gpu, cpu),!missing", True),
        ("app=vllm,tier in (cpu)", False),
    ],
)
def test_label_selector_matches_like_kubernetes(selector: str, expected: bool) -> None:
    assert sel.parse_label_selector(selector).matches(LABELS) is expected


@pytest.mark.parametrize("bad", ["app in (a,b", "a=b,,c=d", "in (x)", "-bad=x"])
def test_malformed_label_selectors_are_rejected(bad: str) -> None:
    with pytest.raises(sel.SelectorError):
        sel.parse_label_selector(bad)


def test_field_selector_on_name_and_namespace() -> None:
    obj = {"metadata": {"name": "a", "namespace": "ns1"}}
    assert sel.parse_field_selector("metadata.name=a,metadata.namespace=ns1").matches(obj)
    assert not sel.parse_field_selector("metadata.name!=a").matches(obj)
    assert sel.parse_field_selector("metadata.namespace!=ns2").matches(obj)


def test_deployment_selector_object_round_trips_to_scale_string() -> None:
    selector = sel.from_label_selector_object(
        {"matchLabels": {"app": "vllm"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["gpu"]}]}
    )
    text = sel.to_string(selector)
    assert text == "app=vllm,tier in (gpu)"
    assert sel.parse_label_selector(text).matches(LABELS)
