"""deploy/overlays/tls on a real nats-server: the overlay's tls.conf (with a throwaway CA and a server
certificate for the names the overlay's Certificate lists, made with openssl), wva's own
`natsio.connect` with WVA_NATS_TLS_CA, and nothing that does not speak TLS gets in.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared import natsio, streams
from shared.settings import Settings
from shared.subjects import Subjects
from tests.fixtures.servers import NatsServer
from tests.integration.deploy import manifests, natsconf
from tests.integration.deploy.manifests import DEPLOY
from tests.integration.deploy.test_nats_permissions import NS, VA, decision

S = Subjects()
OVERLAY = DEPLOY / "overlays" / "tls"
# Where the overlay mounts the Secret wva-nats-tls in the NATS pod (nats-certificate.yaml).
NATS_TLS_DIR = "/etc/nats-tls"


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path  # the server's
    key: Path
    client_cert: Path  # signed by the same CA, for mTLS
    client_key: Path
    other_ca: Path  # a CA that signed nothing here


def openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"openssl {' '.join(args)}:\n{result.stderr}"


def make_ca(directory: Path, name: str) -> None:
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "1", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip


def sign(directory: Path, name: str, *, extensions: str) -> None:
    """`name`.crt and `name`.key, signed by ca.crt with the given X.509 extensions."""
    openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
        cwd=directory,
    )  # fmt: skip
    (directory / f"{name}.ext").write_text(extensions)
    openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", f"{name}.crt", "-days", "1", "-extfile", f"{name}.ext",
        cwd=directory,
    )  # fmt: skip


def certificate_dns_names() -> list[str]:
    (cert,) = [
        d for d in manifests.load(OVERLAY / "certificate.yaml") if d["metadata"]["name"] == "wva-nats-tls"
    ]
    return list(cert["spec"]["dnsNames"])


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    make_ca(d, "ca")
    make_ca(d, "other-ca")
    # The overlay's names, and 127.0.0.1 because that is where the test reaches the server.
    names = ",".join([*(f"DNS:{n}" for n in certificate_dns_names()), "IP:127.0.0.1"])
    sign(d, "server", extensions=f"subjectAltName={names}\nextendedKeyUsage=serverAuth\n")
    sign(d, "client", extensions="extendedKeyUsage=clientAuth\n")
    return Pki(
        ca=d / "ca.crt",
        cert=d / "server.crt",
        key=d / "server.key",
        client_cert=d / "client.crt",
        client_key=d / "client.key",
        other_ca=d / "other-ca.crt",
    )


def overlay_tls_conf(pki: Pki, *, mtls: bool = False) -> str:
    """The overlay's tls.conf with the mounted Secret's paths pointing at the test's files; `mtls`
    uncomments the client-certificate lines, as docs/security.md says to."""
    text = (OVERLAY / "tls.conf").read_text()
    assert f"{NATS_TLS_DIR}/tls.crt" in text and f"{NATS_TLS_DIR}/tls.key" in text
    text = text.replace(f"{NATS_TLS_DIR}/tls.crt", str(pki.cert))
    text = text.replace(f"{NATS_TLS_DIR}/tls.key", str(pki.key))
    text = text.replace(f"{NATS_TLS_DIR}/ca.crt", str(pki.ca))
    if mtls:
        text, n = re.subn(r"(?m)^(\s*)# (ca_file:|verify:)", r"\1\2", text)
        assert n == 2, "the mTLS lines of tls.conf are not where docs/security.md says"
    return text


def tls_url(srv: NatsServer) -> str:
    return f"tls://127.0.0.1:{srv.port}"


def as_scaler(url: str, **extra: object) -> Settings:
    return Settings(
        nats_url=url,
        nats_user="wva-scaler",
        nats_password=natsconf.password("scaler"),
        nats_connect_timeout=1.0,
        **extra,  # type: ignore[arg-type]
    )


def plaintext_session(port: int) -> tuple[dict[str, object], list[bytes]]:
    """A client that does not speak TLS: read INFO, send CONNECT and PING in clear, and return INFO
    and the lines the server sends until it answers PONG or an error, or closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        f = sock.makefile("rb")
        line = f.readline()
        assert line.startswith(b"INFO "), line
        info = json.loads(line[5:])
        connect = {
            "verbose": False,
            "pedantic": False,
            "user": "wva-scaler",
            "pass": natsconf.password("scaler"),
        }
        answer: list[bytes] = []
        try:
            sock.sendall(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
            while line := f.readline():
                answer.append(line)
                if line.startswith((b"PONG", b"-ERR")):
                    break
        except (ConnectionResetError, BrokenPipeError):
            pass
    return info, answer


@pytest.fixture
def tls_nats(tmp_path: Path, pki: Pki) -> NatsServer:
    with natsconf.server(tmp_path, tls_conf=overlay_tls_conf(pki)) as srv:
        yield srv  # type: ignore[misc]


async def test_services_connect_with_tls_and_the_ca_and_use_jetstream(tls_nats: NatsServer, pki: Pki) -> None:
    nc = await natsio.connect(as_scaler(tls_url(tls_nats), nats_tls_ca=str(pki.ca)), name="wva-scaler")
    try:
        assert nc.connected_url is not None and nc.connected_url.scheme == "tls"
        await streams.ensure(nc.jetstream(), S, streams.StreamSpec())
        ack = await natsio.publish(nc.jetstream(), S.decisions(NS, VA), decision())
        assert ack.stream == "WVA_EVENTS"
    finally:
        await nc.close()
    assert natsconf.violations(tls_nats) == []


async def test_a_client_without_tls_is_refused(tls_nats: NatsServer, tmp_path: Path) -> None:
    info, answer = await asyncio.to_thread(plaintext_session, tls_nats.port)
    assert info.get("tls_required") is True
    assert not any(line.startswith(b"PONG") for line in answer), answer
    # The same client, on the default overlay's NATS (no TLS), gets in: the refusal above is TLS's doing.
    with natsconf.server(tmp_path / "plain") as plain:
        info, answer = await asyncio.to_thread(plaintext_session, plain.port)
    assert not info.get("tls_required") and answer[-1].startswith(b"PONG"), answer


def tls_handshake(port: int, cafile: Path | None) -> None:
    """Read NATS' INFO in clear, then upgrade to TLS as a client does, verifying with `cafile` (None:
    the system's CAs); raises ssl.SSLCertVerificationError when the server's certificate does not verify."""
    context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        info = b""
        while not info.endswith(b"\r\n"):
            info += sock.recv(1)
        assert info.startswith(b"INFO "), info
        with context.wrap_socket(sock, server_hostname="127.0.0.1"):
            pass


async def test_the_server_certificate_verifies_against_the_ca_and_no_other(
    tls_nats: NatsServer, pki: Pki
) -> None:
    await asyncio.to_thread(tls_handshake, tls_nats.port, pki.ca)
    for other in (pki.other_ca, None):
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.to_thread(tls_handshake, tls_nats.port, other)


async def test_a_service_that_does_not_trust_the_server_stops_with_a_clear_error(
    tls_nats: NatsServer, pki: Pki
) -> None:
    for url, ca in ((tls_url(tls_nats), str(pki.other_ca)), (tls_nats.url, None)):
        settings = as_scaler(url, nats_tls_ca=ca)
        with pytest.raises(natsio.NatsStartupError, match=r"(?i)certificate verify failed"):
            await asyncio.wait_for(
                natsio.connect(settings, name="wva-scaler"), settings.nats_connect_timeout + 5
            )


async def test_mtls_needs_a_client_certificate_from_the_ca(tmp_path: Path, pki: Pki) -> None:
    with natsconf.server(tmp_path, tls_conf=overlay_tls_conf(pki, mtls=True)) as srv:
        with pytest.raises(natsio.NatsStartupError):
            await natsio.connect(as_scaler(tls_url(srv), nats_tls_ca=str(pki.ca)), name="wva-scaler")
        settings = as_scaler(
            tls_url(srv),
            nats_tls_ca=str(pki.ca),
            nats_tls_cert=str(pki.client_cert),
            nats_tls_key=str(pki.client_key),
        )
        nc = await natsio.connect(settings, name="wva-scaler")
        try:
            await streams.ensure(nc.jetstream(), S, streams.StreamSpec())
        finally:
            await nc.close()
