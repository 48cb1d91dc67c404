"""What the bundled NATS exposes: its monitoring port listens inside the pod only and no Service or
container port offers it; overlays/tls serves a certificate the services can verify, with nothing but
the CA certificate mounted into their pods (docs/security.md)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.integration.deploy import manifests
from tests.integration.deploy.manifests import DEPLOY, SERVICES

NATS_BUILDS = ["nats", "overlays/default", "overlays/hpa", "overlays/scrape", "overlays/tls"]
CONF = DEPLOY / "nats" / "nats.conf"


def _monitor() -> tuple[str, int]:
    (listen,) = re.findall(r'(?m)^http:\s*"([^"]+)"$', CONF.read_text())
    host, port = listen.rsplit(":", 1)
    return host, int(port)


def test_nats_monitoring_listens_on_localhost_only() -> None:
    text = CONF.read_text()
    assert _monitor()[0] == "127.0.0.1"
    # No other way to open a monitoring (or TLS monitoring) listener.
    assert not re.findall(r"(?m)^\s*(http_port|https_port|https|monitor_port)\s*[:=]", text)


@pytest.mark.parametrize("build", NATS_BUILDS)
def test_no_service_or_container_port_offers_monitoring(build: str) -> None:
    docs = manifests.build(DEPLOY / build)
    _, monitor_port = _monitor()
    nats = manifests.one(docs, "StatefulSet", "wva-nats")
    c = nats["spec"]["template"]["spec"]["containers"][0]
    assert [(p["name"], p["containerPort"]) for p in c["ports"]] == [("client", 4222)]
    for svc in manifests.find(docs, "Service"):
        for port in svc["spec"]["ports"]:
            assert monitor_port not in (port["port"], port.get("targetPort")), svc["metadata"]["name"]
            assert port.get("targetPort") != "monitor", svc["metadata"]["name"]
    # The probes ask /healthz from inside the pod.
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        command = c[probe]["exec"]["command"]
        (url,) = [a for a in command if a.startswith("http")]
        parts = urlsplit(url)
        assert (parts.hostname, parts.port, parts.path) == ("127.0.0.1", monitor_port, "/healthz"), probe
        assert command[0] == "wget" and "-T" in command  # busybox wget, bounded by a timeout
        assert c[probe]["timeoutSeconds"] > int(command[command.index("-T") + 1])
    assert c["image"].endswith("-alpine"), "the exec probes need the image's busybox wget"


# ------------------------------------------------------------------------- overlays/tls


def _tls_build() -> list[dict[str, Any]]:
    return manifests.build(DEPLOY / "overlays/tls")


def _volume(pod: dict[str, Any], name: str) -> dict[str, Any]:
    (volume,) = [v for v in pod["volumes"] if v["name"] == name]
    return dict(volume)


def _mount_path(container: dict[str, Any], volume: str) -> str:
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume]
    assert mount.get("readOnly") is True
    return str(mount["mountPath"])


def test_tls_overlay_nats_serves_the_certificate_of_its_secret() -> None:
    docs = _tls_build()
    server_cert = manifests.one(docs, "Certificate", "wva-nats-tls")["spec"]
    pod = manifests.one(docs, "StatefulSet", "wva-nats")["spec"]["template"]["spec"]
    assert _volume(pod, "tls")["secret"]["secretName"] == server_cert["secretName"]
    mount = _mount_path(pod["containers"][0], "tls")
    (config_map,) = [
        s["configMap"]["name"] for s in _volume(pod, "config")["projected"]["sources"] if "configMap" in s
    ]
    config = manifests.one(docs, "ConfigMap", config_map)["data"]
    tls_conf = config["tls.conf"]
    assert re.search(rf'(?m)^\s*cert_file:\s*"{mount}/tls\.crt"$', tls_conf)
    assert re.search(rf'(?m)^\s*key_file:\s*"{mount}/tls\.key"$', tls_conf)
    assert "include ./tls.conf" in config["nats.conf"]
    # The default overlay's tls.conf holds no TLS block.
    default = manifests.build(DEPLOY / "overlays/default")
    (plain,) = [
        c for c in manifests.find(default, "ConfigMap") if c["metadata"]["name"].startswith("wva-nats-config")
    ]
    assert not re.search(r"(?m)^\s*tls\s*\{", plain["data"]["tls.conf"])
    assert re.search(r"(?m)^\s*tls\s*\{", tls_conf)


def test_tls_overlay_services_verify_the_server_with_the_ca_only() -> None:
    docs = _tls_build()
    server_cert = manifests.one(docs, "Certificate", "wva-nats-tls")["spec"]
    common = manifests.one(docs, "ConfigMap", "wva-common")["data"]
    url = urlsplit(common["WVA_NATS_URL"])
    assert url.scheme == "tls" and url.hostname in server_cert["dnsNames"]
    assert "server auth" in server_cert["usages"]
    for service in SERVICES:
        pod = manifests.one(docs, "Deployment", f"wva-{service}")["spec"]["template"]["spec"]
        ca = _volume(pod, "nats-ca")["secret"]
        assert ca["secretName"] == server_cert["secretName"]
        assert ca["items"] == [{"key": "ca.crt", "path": "ca.crt"}], "only the CA, never the server's key"
        assert common["WVA_NATS_TLS_CA"] == f"{_mount_path(pod['containers'][0], 'nats-ca')}/ca.crt"


def test_tls_overlay_issuers_chain_up_to_a_ca_in_the_build() -> None:
    docs = _tls_build()
    issuers = {i["metadata"]["name"]: i["spec"] for i in manifests.find(docs, "Issuer")}
    certificates = {c["metadata"]["name"]: c["spec"] for c in manifests.find(docs, "Certificate")}
    for cert in certificates.values():
        assert cert["issuerRef"]["kind"] == "Issuer" and cert["issuerRef"]["name"] in issuers
    server_issuer = issuers[certificates["wva-nats-tls"]["issuerRef"]["name"]]
    (ca,) = [c for c in certificates.values() if c["secretName"] == server_issuer["ca"]["secretName"]]
    assert ca["isCA"] is True
    assert "selfSigned" in issuers[ca["issuerRef"]["name"]]
    assert all(d["metadata"]["namespace"] == "wva-system" for d in manifests.find(docs, "Issuer"))
