"""The `wva` command: every subcommand is listed and its --help renders (every setting's help text)."""

from __future__ import annotations

import importlib

import pytest

from services import cli


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("wva ")


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_each_command_help_renders(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main([name, "--help"])
    assert exit_.value.code == 0
    assert f"wva {name}" in capsys.readouterr().out


@pytest.mark.parametrize("service", ["watcher", "fetcher", "scaler"])
def test_bad_setting_exits_2_naming_it(service: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([service, "--log-format", "xml"]) == 2
    assert "--log-format='xml'" in capsys.readouterr().err


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_listed_summary_is_the_first_line_of_the_commands_help(name: str) -> None:
    command = cli.COMMANDS[name]
    assert command.summary == importlib.import_module(command.module).HELP.splitlines()[0]
