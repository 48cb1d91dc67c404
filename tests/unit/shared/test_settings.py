from __future__ import annotations

import argparse
import dataclasses

import pytest

from shared.settings import Settings, SettingsError, add_arguments, duration, load, positive_int, setting


@pytest.mark.parametrize(
    ("text", "seconds"), [("15s", 15.0), ("5m", 300.0), ("1h", 3600.0), ("250ms", 0.25), ("2", 2.0), ("1.5s", 1.5)]
)
def test_durations(text: str, seconds: float) -> None:
    assert duration(text) == seconds


def test_defaults() -> None:
    s = load(Settings, environ={})
    assert s.nats_url == "nats://127.0.0.1:4222"
    assert s.subject_prefix == "wva"
    assert s.http_addr == "0.0.0.0:8080"
    assert s.log_format == "auto"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WVA_NATS_CONNECT_TIMEOUT": "abc"}, "WVA_NATS_CONNECT_TIMEOUT='abc': invalid duration"),
        ({"WVA_NATS_CONNECT_TIMEOUT": "5 parsecs"}, "invalid duration"),
        ({"WVA_NATS_URL": "http://x:4222"}, "WVA_NATS_URL='http://x:4222': invalid URL"),
        ({"WVA_NATS_URL": "nats://"}, "invalid URL"),
        ({"WVA_NATS_URL": "nats://host:notaport"}, "invalid port"),
        ({"WVA_LOG_FORMAT": "xml"}, "WVA_LOG_FORMAT='xml': invalid value 'xml' (expected one of: auto, json, console)"),
        ({"WVA_HTTP_ADDR": "8080"}, "WVA_HTTP_ADDR"),
        ({"WVA_SUBJECT_PREFIX": "wva.>"}, "WVA_SUBJECT_PREFIX"),
        ({"WVA_STREAM_REPLICAS": "0"}, "WVA_STREAM_REPLICAS"),
        ({"WVA_NATS_TLS_CERT": "/c.pem"}, "WVA_NATS_TLS_KEY"),
        ({"WVA_NATS_USER": "u"}, "WVA_NATS_PASSWORD"),
        ({"WVA_LEASE_BACKEND": "etcd"}, "WVA_LEASE_BACKEND='etcd': invalid value 'etcd' (expected one of: none, nats, kubernetes)"),
        ({"WVA_LEASE_NAMESPACE": "Wva_System"}, "WVA_LEASE_NAMESPACE='Wva_System': invalid namespace"),
        ({"WVA_LEASE_TTL": "1s"}, "WVA_LEASE_TTL must be at least 1.5s"),
        ({"WVA_PARTITIONS": "0"}, "WVA_PARTITIONS"),
        ({"WVA_PARTITIONS": "5000"}, "WVA_PARTITIONS must be at most 4096"),
        ({"WVA_LEASES": "wva.leases"}, "WVA_LEASES='wva.leases': invalid bucket name"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as err:
        load(Settings, environ=env)
    assert message in str(err.value)


def test_secrets_are_not_echoed() -> None:
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class WithSecret(Settings):
        port: int = setting("WVA_TEST_PORT", 1, positive_int, secret=True)

    with pytest.raises(SettingsError) as err:
        load(WithSecret, environ={"WVA_TEST_PORT": "hunter2"})
    assert "hunter2" not in str(err.value)


def test_flag_beats_environment_beats_default() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser, Settings)
    args = parser.parse_args(["--log-level", "debug"])
    env = {"WVA_LOG_LEVEL": "warning", "WVA_LOG_FORMAT": "json"}
    s = load(Settings, args, environ=env)
    assert s.log_level == "debug"  # flag
    assert s.log_format == "json"  # environment
    assert s.subject_prefix == "wva"  # default
    with pytest.raises(SettingsError, match="--log-level='loud'"):
        load(Settings, parser.parse_args(["--log-level", "loud"]), environ={})


def test_every_setting_has_an_env_var_and_help() -> None:
    for field in dataclasses.fields(Settings):
        assert field.metadata["env"].startswith("WVA_")
        assert field.metadata["help"]


def test_help_text_with_a_percent_sign_renders() -> None:
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class WithPercent(Settings):
        spread: float = setting("WVA_TEST_SPREAD", 0.5, float, "spread by up to 50% of the timeout")

    parser = argparse.ArgumentParser()
    add_arguments(parser, WithPercent)
    assert "up to 50% of the timeout" in parser.format_help()
