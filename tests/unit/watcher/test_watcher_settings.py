"""Watcher settings: environment, flags and the messages that name a bad setting."""

from __future__ import annotations

import argparse

import pytest

from services.watcher import command
from services.watcher.settings import WatcherSettings
from shared.settings import SettingsError, load


def test_environment_and_flags() -> None:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(["--kubeconfig", "/tmp/kc", "--watch-backoff-max", "10s"])
    settings = load(
        WatcherSettings, args, {"WVA_WATCH_NAMESPACES": "team-a, team-b", "WVA_CONTROLLER_INSTANCE": "blue"}
    )
    assert settings.watch_namespaces == ("team-a", "team-b")
    assert settings.controller_instance == "blue"
    assert settings.kubeconfig == "/tmp/kc"
    assert settings.watch_backoff_max == 10.0
    defaults = load(WatcherSettings, None, {"KUBECONFIG": "/etc/kc"})
    assert (defaults.watch_namespaces, defaults.controller_instance, defaults.kubeconfig) == ((), None, "/etc/kc")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"WVA_WATCH_NAMESPACES": "Team_A"}, "WVA_WATCH_NAMESPACES"),
        ({"WVA_WATCH_NAMESPACES": "a,a"}, "WVA_WATCH_NAMESPACES"),
        ({"WVA_CONTROLLER_INSTANCE": "not a label"}, "WVA_CONTROLLER_INSTANCE"),
        ({"WVA_WATCH_BACKOFF_MIN": "10s", "WVA_WATCH_BACKOFF_MAX": "1s"}, "WVA_WATCH_BACKOFF_MIN"),
        ({"WVA_WATCH_TIMEOUT": "soon"}, "WVA_WATCH_TIMEOUT"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        load(WatcherSettings, None, env)


def test_the_command_exits_2_on_a_bad_setting(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WVA_WATCH_NAMESPACES", "Bad_NS")
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    assert command.run(parser.parse_args([])) == 2
    assert "WVA_WATCH_NAMESPACES" in capsys.readouterr().err
