"""Prometheus access: the bearer token (fixed or from a rotating file) is sent, and TLS is verified."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web

from services.fetcher import credentials
from services.fetcher.collector import QueryError
from services.fetcher.prometheus import PrometheusCollector
from services.fetcher.settings import FetcherSettings
from shared.settings import SettingsError, load
from tests.fixtures.binaries import require_binary

OK = {"status": "success", "data": {"resultType": "vector", "result": []}}


class Recorder:
    """A stand-in Prometheus that records the Authorization header of every query."""

    def __init__(self) -> None:
        self.authorization: list[str | None] = []

    async def query(self, request: web.Request) -> web.Response:
        self.authorization.append(request.headers.get("Authorization"))
        return web.json_response(OK)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., object]]:
    runners: list[web.AppRunner] = []

    async def start(*, tls: ssl.SSLContext | None = None) -> tuple[Recorder, str]:
        recorder = Recorder()
        app = web.Application()
        app.router.add_get("/api/v1/query", recorder.query)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return recorder, f"{'https' if tls else 'http'}://127.0.0.1:{port}"

    try:
        yield start
    finally:
        for runner in runners:
            await runner.cleanup()


async def _ask(collector: PrometheusCollector) -> None:
    loop = asyncio.get_running_loop()
    await collector.query("up", at=time.time(), deadline=loop.time() + 3)


async def test_the_token_from_the_file_is_sent_and_re_read_after_rotation(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    recorder, url = await serve()
    token = tmp_path / "token"
    token.write_text("first-token\n")
    settings = load(
        FetcherSettings, environ={"WVA_PROMETHEUS_URL": url, "WVA_PROMETHEUS_TOKEN_FILE": str(token)}
    )
    collector = PrometheusCollector(settings)
    try:
        await _ask(collector)
        # The kubelet rotates a projected token by swapping a symlink: a new file, same path.
        rotated = tmp_path / "token.new"
        rotated.write_text("second-token")
        os.replace(rotated, token)
        await _ask(collector)
        assert recorder.authorization == ["Bearer first-token", "Bearer second-token"]
        # An unreadable file later keeps the last good token instead of failing the query.
        token.unlink()
        await _ask(collector)
        assert recorder.authorization[-1] == "Bearer second-token"
    finally:
        await collector.aclose()


async def test_a_fixed_token_is_sent_and_none_without_one(serve) -> None:  # type: ignore[no-untyped-def]
    recorder, url = await serve()
    for token in ("s3cret", None):
        collector = PrometheusCollector(FetcherSettings(prometheus_url=url, prometheus_token=token))
        try:
            await _ask(collector)
        finally:
            await collector.aclose()
    assert recorder.authorization == ["Bearer s3cret", None]


def test_same_stat_is_still_re_read_after_max_age(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("a")
    now = [0.0]
    source = credentials.TokenFile(str(path), clock=lambda: now[0])
    st = path.stat()
    path.write_text("b")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime, same inode
    assert source.token() == "a"
    now[0] = credentials.MAX_AGE
    assert source.token() == "b" and source.reloads == 1


@pytest.mark.parametrize(
    ("content", "why"), [(None, "No such file"), ("", "empty"), ("  \n", "empty")]
)
def test_an_unusable_token_file_is_a_start_up_error_naming_the_setting(
    tmp_path: Path, content: str | None, why: str
) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SettingsError, match="WVA_PROMETHEUS_TOKEN_FILE") as err:
        load(FetcherSettings, environ={"WVA_PROMETHEUS_TOKEN_FILE": str(path)})
    assert why in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"WVA_PROMETHEUS_TOKEN": "t", "WVA_PROMETHEUS_TOKEN_FILE": "/dev/null"}, "WVA_PROMETHEUS_TOKEN_FILE"),
        ({"WVA_PROMETHEUS_CA": "/nonexistent/ca.pem"}, "WVA_PROMETHEUS_CA"),
        (
            {"WVA_PROMETHEUS_CA": "/etc/hostname", "WVA_PROMETHEUS_INSECURE_SKIP_VERIFY": "true"},
            "WVA_PROMETHEUS_INSECURE_SKIP_VERIFY",
        ),
    ],
)
def test_contradictory_or_missing_tls_and_token_settings_are_rejected(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        load(FetcherSettings, environ=env)


# ------------------------------------------------------------------------------------------ TLS


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cert, key)."""
    openssl = require_binary("openssl", "install it with `apt-get install openssl`")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert),
        ],
        check=True, capture_output=True,
    )
    return cert, key


async def test_tls_is_verified_by_default_against_the_ca_when_given_and_skipped_only_when_asked(
    serve, certificate: tuple[Path, Path]  # type: ignore[no-untyped-def]
) -> None:
    cert, key = certificate
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    recorder, url = await serve(tls=tls)

    default = PrometheusCollector(load(FetcherSettings, environ={"WVA_PROMETHEUS_URL": url}))
    try:
        with pytest.raises(QueryError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            await _ask(default)
    finally:
        await default.aclose()
    assert recorder.authorization == []  # no request got through an unverified connection

    for env in ({"WVA_PROMETHEUS_CA": str(cert)}, {"WVA_PROMETHEUS_INSECURE_SKIP_VERIFY": "true"}):
        collector = PrometheusCollector(load(FetcherSettings, environ={"WVA_PROMETHEUS_URL": url, **env}))
        try:
            await _ask(collector)
        finally:
            await collector.aclose()
    assert len(recorder.authorization) == 2
