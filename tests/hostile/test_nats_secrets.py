"""Issue #12 item 14: a NATS URL with credentials is never logged nor echoed in an error."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared import natsio
from shared.settings import Settings, SettingsError, load
from tests.fixtures.servers import NatsServer, nats_server_binary
from tests.fixtures.services import StartService
from tests.hostile.conftest import eventually, fetcher_env

PASSWORD = "s3cr3t-nats-pw"


@pytest.fixture
def secured_nats(tmp_path: Path) -> NatsServer:  # type: ignore[misc]
    binary = nats_server_binary()
    assert binary is not None, "nats-server missing: make setup"
    workdir = tmp_path / "secured"
    workdir.mkdir()
    server = NatsServer(binary, workdir, config=f"authorization {{ user: wva, password: {PASSWORD} }}\n")
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_a_service_connected_with_credentials_in_its_url_never_logs_them(
    secured_nats: NatsServer, wva_process: StartService
) -> None:
    url = f"nats://wva:{PASSWORD}@127.0.0.1:{secured_nats.port}"
    fetcher = await wva_process("fetcher", fetcher_env(url, WVA_LOG_LEVEL="debug"))
    assert "connected to NATS" in fetcher.log()
    secured_nats.restart()  # a reconnect logs too
    await eventually(lambda: "NATS reconnected" in fetcher.log(), timeout=20, what="a reconnect")
    assert PASSWORD not in fetcher.log()


async def test_wrong_credentials_in_the_url_are_not_echoed(secured_nats: NatsServer) -> None:
    settings = Settings(nats_url=f"nats://wva:wrong-{PASSWORD}@127.0.0.1:{secured_nats.port}", nats_connect_timeout=5)
    with pytest.raises(natsio.NatsStartupError) as err:
        await natsio.connect(settings, name="test")
    assert "refused the credentials" in str(err.value) and PASSWORD not in str(err.value)
    unreachable = Settings(nats_url=f"nats://wva:{PASSWORD}@127.0.0.1:1", nats_connect_timeout=0.5)
    with pytest.raises(natsio.NatsStartupError) as err:
        await natsio.connect(unreachable, name="test")
    assert "nats://***@127.0.0.1:1" in str(err.value) and PASSWORD not in str(err.value)


@pytest.mark.parametrize(
    "url",
    [
        f"nats://wva:{PASSWORD}@127.0.0.1:notaport",
        f"http://wva:{PASSWORD}@127.0.0.1:4222",
        f"nats://wva:{PASSWORD}@127.0.0.1:4222,bogus://x:{PASSWORD}@h",
    ],
)
def test_a_bad_nats_url_is_refused_without_its_credentials(url: str) -> None:
    with pytest.raises(SettingsError) as err:
        load(Settings, environ={"WVA_NATS_URL": url})
    assert "WVA_NATS_URL" in str(err.value) and PASSWORD not in str(err.value)


async def test_a_bad_nats_url_stops_the_process_without_its_credentials(wva_process: StartService) -> None:
    fetcher = await wva_process("fetcher", {"WVA_NATS_URL": f"nats://wva:{PASSWORD}@host:port"}, ready=False)
    await eventually(lambda: not fetcher.alive, timeout=15, what="the fetcher refuses the URL")
    assert fetcher.returncode == 2 and "WVA_NATS_URL" in fetcher.log() and PASSWORD not in fetcher.log()
