"""The unit tier stays a unit tier: a test here that starts a process or opens a listening socket
fails, naming what it did and where such a test belongs (tests/integration). That keeps
`make test-fast` fast and free of servers; the integration tier has the real ones.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from typing import Any, NoReturn

import pytest

MOVE = "unit tests start no process and no server; move this test to tests/integration"


class UnitTierViolation(AssertionError):
    """A unit test tried to start a process or listen on a socket."""


def _refuse(what: str) -> Any:
    def refuse(*args: Any, **kwargs: Any) -> NoReturn:
        raise UnitTierViolation(f"{what}: {MOVE}")

    return refuse


@pytest.fixture(autouse=True)
def _unit_tier_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Popen covers subprocess.run/check_output and asyncio's subprocesses, which use it underneath.
    monkeypatch.setattr(subprocess, "Popen", _refuse("subprocess.Popen"))
    for name in ("system", "fork", "forkpty", "posix_spawn", "posix_spawnp", "execv", "execve"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, _refuse(f"os.{name}"))
    # Every server (aiohttp, asyncio.start_server, socketserver) ends in listen() on a socket.socket.
    monkeypatch.setattr(socket.socket, "listen", _refuse("socket.listen (a server)"))
    yield
