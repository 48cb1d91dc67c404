"""Fetcher settings: defaults from the design, and the checks that stop a bad start-up."""

from __future__ import annotations

import dataclasses

import pytest

from services import cli
from services.fetcher import factory
from services.fetcher.settings import COLLECTORS, FetcherSettings
from shared.settings import SettingsError, load


def test_defaults_are_the_designs() -> None:
    s = load(FetcherSettings, environ={})
    assert (s.cache_enabled, s.cache_ttl, s.cache_cleanup_interval, s.fetch_interval) == (True, 30.0, 300.0, 15.0)
    assert s.collector == "prometheus" and s.query_mode == "batched" and s.rate_window == 60.0
    assert s.prometheus_insecure_skip_verify is False  # TLS verification on by default


def test_ttl_shorter_than_fetch_interval_is_rejected_naming_both() -> None:
    with pytest.raises(SettingsError) as err:
        load(FetcherSettings, environ={"WVA_CACHE_TTL": "10s", "WVA_FETCH_INTERVAL": "15s"})
    assert "WVA_CACHE_TTL" in str(err.value) and "WVA_FETCH_INTERVAL" in str(err.value)


@pytest.mark.parametrize(
    "env",
    [
        {"WVA_CACHE_TTL": "10s", "WVA_FETCH_INTERVAL": "0"},  # background fetching off
        {"WVA_CACHE_TTL": "10s", "WVA_CACHE_ENABLED": "false"},  # caching off
    ],
)
def test_ttl_check_only_applies_when_both_are_on(env: dict[str, str]) -> None:
    load(FetcherSettings, environ=env)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"WVA_COLLECTOR": "epp"}, "WVA_COLLECTOR"),
        ({"WVA_QUERY_MODE": "sometimes"}, "WVA_QUERY_MODE"),
        ({"WVA_PROMETHEUS_URL": "prometheus:9090"}, "WVA_PROMETHEUS_URL"),
        ({"WVA_RATE_WINDOW": "fast"}, "WVA_RATE_WINDOW"),
        ({"WVA_ITL_METRIC": "not a metric"}, "WVA_ITL_METRIC"),
        ({"WVA_GATEWAY_QUEUE_METRIC": "queue size"}, "WVA_GATEWAY_QUEUE_METRIC"),
        ({"WVA_COLLECTOR": "scrape", "WVA_GATEWAY_METRICS_URL": "gateway:9090/metrics"}, "WVA_GATEWAY_METRICS_URL"),
        # Prometheus reads the gateway itself: a URL here would be silently unused.
        ({"WVA_GATEWAY_METRICS_URL": "http://gateway:9090/metrics"}, "WVA_GATEWAY_METRICS_URL"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        load(FetcherSettings, environ=env)


def test_the_gateway_is_the_inference_extensions_queue_and_optional() -> None:
    s = load(FetcherSettings, environ={})
    assert s.gateway_queue_metric == "inference_extension_flow_control_queue_size"
    assert s.gateway_metrics_url is None
    scrape = load(FetcherSettings, environ={"WVA_COLLECTOR": "scrape", "WVA_GATEWAY_METRICS_URL": ""})
    assert scrape.gateway_metrics_url is None  # empty: no gateway
    url = "http://127.0.0.1:9000/metrics"
    assert load(FetcherSettings, environ={"WVA_COLLECTOR": "scrape", "WVA_GATEWAY_METRICS_URL": url}).gateway_metrics_url == url


def test_every_selectable_collector_has_a_backend() -> None:
    assert set(COLLECTORS) == {str(k) for k in factory.REGISTRY}
    assert factory.create(FetcherSettings(collector="scrape")).name == "scrape"


def _env_names() -> list[str]:
    return [str(f.metadata["env"]) for f in dataclasses.fields(FetcherSettings)]


def test_wva_fetcher_help_renders_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["fetcher", "--help"])  # argparse raises on a stray % in any setting's help
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    missing = [env for env in _env_names() if f"env {env}," not in text]
    assert missing == []
    assert "WVA_PROMETHEUS_TOKEN_FILE" in text and "default ***" in text  # the token is never shown

