"""The guard in tests/unit/conftest.py: a unit test cannot start a process or a server."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys

import pytest

from tests.unit.conftest import UnitTierViolation


def test_a_subprocess_is_refused() -> None:
    with pytest.raises(UnitTierViolation, match="tests/integration"):
        subprocess.run([sys.executable, "-c", "pass"], check=False)


def test_os_level_process_starts_are_refused() -> None:
    with pytest.raises(UnitTierViolation):
        os.system("true")
    with pytest.raises(UnitTierViolation):
        os.posix_spawn(sys.executable, [sys.executable, "-c", "pass"], os.environ)


async def test_an_asyncio_subprocess_is_refused() -> None:
    with pytest.raises(UnitTierViolation):
        await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")


def test_a_listening_socket_is_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # binding alone (free_port) is fine
        with pytest.raises(UnitTierViolation):
            s.listen()
