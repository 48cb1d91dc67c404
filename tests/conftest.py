"""Test-wide hooks: real-server fixtures, a leaked-task check, and no silent skips in CI."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

pytest_plugins = [
    "pytester",  # tests of the suite's own hooks run a small pytest session in-process
    *(
        f"tests.fixtures.{path.stem}"
        for path in sorted((Path(__file__).parent / "fixtures").glob("*.py"))
        if path.stem != "__init__"
    ),
]


@pytest.fixture
async def _task_leak_check() -> AsyncIterator[None]:
    before = asyncio.all_tasks()
    yield
    current = asyncio.current_task()
    leaked: list[asyncio.Task[object]] = []
    for _ in range(50):  # tasks cancelled during teardown may need a few loop turns to finish
        leaked = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
        if not leaked:
            return
        await asyncio.sleep(0.02)
    for task in leaked:
        task.cancel()
    pytest.fail(f"test left {len(leaked)} asyncio task(s) running: {[t.get_coro() for t in leaked]}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("asyncio") is not None and isinstance(item, pytest.Function):
            # First in the list so that its teardown runs last, after the servers stopped.
            item.fixturenames.insert(0, "_task_leak_check")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if (
        report.skipped
        and os.environ.get("WVA_NO_SKIP") == "1"
        and item.get_closest_marker("docker") is None
    ):
        # A real-server test that skips in CI is a test that does not exist.
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (WVA_NO_SKIP=1), which is a failure: {report.longrepr}"
