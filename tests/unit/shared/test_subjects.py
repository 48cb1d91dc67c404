from __future__ import annotations

import pytest

from shared import subjects
from shared.subjects import SubjectKind, Subjects

S = Subjects()


@pytest.mark.parametrize(
    ("namespace", "name"),
    [
        ("llm", "llama-8b"),
        ("llm", "llama-3.1-8b.h100"),  # dots become '_' and come back
        ("n" * 63, "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61),  # 63-char ns, 253-char name
        ("a", "0"),
    ],
)
@pytest.mark.parametrize("kind", list(SubjectKind))
def test_build_parse_round_trip(kind: SubjectKind, namespace: str, name: str) -> None:
    subject = S.build(kind, namespace, name)
    assert "." not in subject.split(".", 3)[3]  # the name is one token
    assert S.parse(subject) == subjects.SubjectRef(kind, namespace, name)


def test_dotted_name_is_one_token() -> None:
    assert S.metrics("llm", "llama-3.1-8b") == "wva.metrics.llm.llama-3_1-8b"


@pytest.mark.parametrize(
    "bad_name",
    ["Llama", "a_b", "", "a..b", "-a", "a-", "a.*", "a.>", "a b", "x" * 254, "a/b", "llama\n", "a.b\n"],
)
def test_invalid_names_are_rejected_with_the_value_and_rule(bad_name: str) -> None:
    with pytest.raises(subjects.InvalidName) as err:
        S.targets("llm", bad_name)
    assert repr(bad_name[:80]) in str(err.value)  # quoted, and at most 80 characters of it
    assert "RFC 1123" in str(err.value)


def test_a_long_name_is_quoted_in_part_only() -> None:
    with pytest.raises(subjects.InvalidName) as err:
        S.targets("llm", "X" * 100_000)
    assert len(str(err.value)) < 400 and "100000 characters" in str(err.value)


@pytest.mark.parametrize("bad_ns", ["LLM", "a.b", "a_b", "", "-a", "*", ">", "n" * 64, "llm\n"])
def test_invalid_namespaces_are_rejected(bad_ns: str) -> None:
    with pytest.raises(subjects.InvalidName, match="namespace"):
        S.fetch(bad_ns, "x")


@pytest.mark.parametrize(
    "subject",
    [
        "wva.metrics.llm",  # too short
        "wva.metrics.llm.a.b",  # too long
        "other.metrics.llm.a",  # other prefix
        "wva.bogus.llm.a",  # unknown kind
        "wva.metrics.LLM.a",  # invalid namespace
        "wva.metrics.llm.a-",  # invalid name
        "wva.metrics.llm.a__b",  # '_' decodes to '..' which no name has
    ],
)
def test_parse_rejects_what_build_cannot_produce(subject: str) -> None:
    with pytest.raises(subjects.SubjectError):
        S.parse(subject)


def test_custom_prefix_and_stream_names() -> None:
    team = Subjects("team-a.wva")
    subject = team.targets("ns", "v.1")
    assert subject == "team-a.wva.targets.ns.v_1"
    assert team.parse(subject).name == "v.1"
    assert team.wildcard(SubjectKind.METRICS) == "team-a.wva.metrics.>"
    assert team.wildcard() == "team-a.wva.>"
    assert team.stream_name("TARGETS") == "TEAM_A_WVA_TARGETS"
    assert Subjects().stream_name("EVENTS") == "WVA_EVENTS"
    with pytest.raises(subjects.UnknownSubject):
        team.parse("wva.targets.ns.v_1")


@pytest.mark.parametrize("bad", ["", "a..b", "wva.*", "wva.>", "w va", ".wva"])
def test_invalid_prefix(bad: str) -> None:
    with pytest.raises(subjects.InvalidPrefix):
        Subjects(bad)


def test_a_trailing_newline_never_reaches_a_subject() -> None:
    """``$`` matches before a final newline; a newline in a subject would break the NATS protocol line."""
    for build in (lambda: S.targets("llm\n", "x"), lambda: S.targets("llm", "x\n"), lambda: S.parse("wva.targets.llm.x\n")):
        with pytest.raises(subjects.SubjectError):
            build()
