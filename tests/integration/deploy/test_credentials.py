"""No credential in git and none by default: deploy/nats/generate-credentials.sh makes the NATS users'
passwords (Secrets for the services) and their bcrypt hashes (for the server), every build that
includes the bundled NATS fails until it has run, and nothing under deploy/ or docs/ writes a secret
inline (docs/security.md)."""

from __future__ import annotations

import base64
import re
import stat
import subprocess
from pathlib import Path

import pytest

from tests.integration.deploy import manifests
from tests.integration.deploy.manifests import CREDENTIALS, DEPLOY, NATS_USERS, ROOT, SERVICES

NATS_BUILDS = ["nats", "overlays/default", "overlays/hpa", "overlays/scrape", "overlays/tls"]
BCRYPT = re.compile(r"\$2[aby]\$11\$[./A-Za-z0-9]{53}")


def _passwords(directory: Path) -> dict[str, str]:
    out = {}
    for user in NATS_USERS:
        pairs = dict(
            line.split("=", 1) for line in (directory / f"wva-nats-{user}.env").read_text().splitlines()
        )
        assert pairs["user"] == f"wva-{user}"
        out[user] = pairs["password"]
    return out


@pytest.fixture(scope="module")
def fresh_checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/ as cloned: no credentials."""
    return manifests.copy_of_deploy(tmp_path_factory.mktemp("checkout") / "deploy")


@pytest.mark.parametrize("build", NATS_BUILDS)
def test_a_build_with_the_bundled_nats_fails_until_credentials_are_generated(
    fresh_checkout: Path, build: str
) -> None:
    result = manifests.kustomize(fresh_checkout / build)
    assert result.returncode != 0, f"{build} built without credentials"
    # kustomize cannot print a message of ours; it names the missing directory, which
    # deploy/nats/kustomization.yaml and docs/deployment.md say generate-credentials.sh writes.
    assert f"{fresh_checkout / CREDENTIALS}" in result.stderr, result.stderr


@pytest.mark.parametrize("build", ["base", "overlays/existing-nats", "samples"])
def test_builds_without_the_bundled_nats_need_no_generated_credentials(
    fresh_checkout: Path, build: str
) -> None:
    result = manifests.kustomize(fresh_checkout / build)
    assert result.returncode == 0, result.stderr


def test_generated_credentials_become_one_secret_per_user_and_only_hashes_for_nats() -> None:
    docs = manifests.build(DEPLOY / "overlays/default")
    generated = manifests.credentials()
    passwords = [c["password"] for c in generated.values()]
    assert len(set(passwords)) == len(NATS_USERS)
    assert all(len(p) >= 32 and p.isalnum() for p in passwords)
    secrets = {s["metadata"]["name"]: s for s in manifests.find(docs, "Secret")}

    def decoded(name: str, key: str) -> str:
        return base64.b64decode(secrets[name]["data"][key]).decode()

    by_user = {}
    for user in NATS_USERS:
        (name,) = [n for n in secrets if re.fullmatch(rf"wva-nats-{user}-[a-z0-9]{{10}}", n)]
        assert decoded(name, "user") == f"wva-{user}"
        assert decoded(name, "password") == generated[user]["password"]
        by_user[user] = name
    (auth,) = [n for n in secrets if n.startswith("wva-nats-auth-")]
    auth_conf = decoded(auth, "auth.conf")
    assert len(BCRYPT.findall(auth_conf)) == len(NATS_USERS)
    assert not [p for p in passwords if p in auth_conf]

    # Each service's pod reads its own Secret and no other; the NATS pod reads only the hashes.
    for service in SERVICES:
        c = manifests.container(manifests.one(docs, "Deployment", f"wva-{service}"))
        refs = {v["valueFrom"]["secretKeyRef"]["name"] for v in c["env"] if "valueFrom" in v}
        assert refs - {"wva-prometheus"} == {by_user[service]}, service
    nats = manifests.one(docs, "StatefulSet", "wva-nats")["spec"]["template"]["spec"]
    assert "env" not in nats["containers"][0], "the NATS pod needs no password in its environment"
    (config,) = [v for v in nats["volumes"] if v["name"] == "config"]
    assert {"secret": {"name": auth}} in config["projected"]["sources"]


def test_generator_writes_private_files_refuses_to_overwrite_and_rotates_on_request(tmp_path: Path) -> None:
    target = tmp_path / "credentials"
    first = manifests.generate_credentials(target)
    assert first.returncode == 0, first.stderr
    before = _passwords(target)
    assert not [p for p in before.values() if p in first.stdout + first.stderr], "a password was printed"
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    files = sorted(p.name for p in target.iterdir())
    assert files == sorted(["auth.conf", *(f"wva-nats-{u}.env" for u in NATS_USERS)])
    assert all(stat.S_IMODE((target / f).stat().st_mode) == 0o600 for f in files)

    again = manifests.generate_credentials(target)
    assert again.returncode != 0 and "--rotate" in again.stderr
    assert _passwords(target) == before

    rotated = manifests.generate_credentials(target, "--rotate")
    assert rotated.returncode == 0, rotated.stderr
    after = _passwords(target)
    assert all(after[u] != before[u] for u in NATS_USERS)
    assert not [p for p in before.values() if p in (target / "auth.conf").read_text()]


def test_generated_credentials_are_ignored_by_git() -> None:
    paths = [str(Path("deploy") / CREDENTIALS / name) for name in ("auth.conf", "wva-nats-scaler.env")]
    result = subprocess.run(
        ["git", "-C", str(ROOT), "check-ignore", *paths],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0 and result.stdout.split() == paths, result.stdout + result.stderr


# A credential written as a literal: `password: abc…`, `token=abc…`, `--from-literal=password=…`. Names of
# settings (WVA_NATS_PASSWORD), variables ($X, ${X}, %s) and placeholders (<…>, …) are not.
_INLINE = re.compile(
    r"""(?ix)(?<![a-z_])(password|passwd|pass|token|secret)["']?\s*[:=]\s*["']?
    (?![$<%{(…]|\.\.\.|\*)([A-Za-z0-9+/_.-]{6,})"""
)


def _texts() -> list[Path]:
    under_deploy = [p for p in DEPLOY.rglob("*") if p.is_file() and CREDENTIALS.name not in p.parts]
    return [*under_deploy, *sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]


def test_nothing_in_deploy_or_docs_writes_a_secret_inline() -> None:
    assert not [
        (p, d["metadata"]["name"])
        for p in manifests.manifest_files()
        for d in manifests.load(p)
        if d["kind"] == "Secret"
    ], "Secrets are generated (secretGenerator) or created by the user, never written under deploy/"
    found = []
    for path in _texts():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "CHANGE-ME" in line or "--from-literal=password" in line:
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
            for match in _INLINE.finditer(line):
                value = match.group(2)
                # An environment variable's name, or a number (`prefill_seconds_per_token: 0.00002`
                # in docs/lab.md's fleet example), is not a credential.
                if not value.isupper() and not re.fullmatch(r"[0-9.]+", value):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)
