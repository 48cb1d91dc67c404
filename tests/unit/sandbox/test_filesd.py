"""The file_sd document lists targets with namespace and pod labels, and is replaced atomically."""

from __future__ import annotations

import json
from pathlib import Path

from services.sandbox import filesd


def test_writer_keeps_the_file_in_step_with_the_targets(tmp_path: Path) -> None:
    path = tmp_path / "sd" / "targets.json"
    writer = filesd.FileSDWriter(path)
    writer.flush()
    assert json.loads(path.read_text()) == []
    writer.put(filesd.ScrapeTarget(namespace="llm", pod="b-1", address="127.0.0.1:2000"))
    writer.put(filesd.ScrapeTarget(namespace="llm", pod="a-1", address="127.0.0.1:1000"))
    assert json.loads(path.read_text()) == [
        {"targets": ["127.0.0.1:1000"], "labels": {"namespace": "llm", "pod": "a-1"}},
        {"targets": ["127.0.0.1:2000"], "labels": {"namespace": "llm", "pod": "b-1"}},
    ]
    writes = writer.writes
    writer.put(filesd.ScrapeTarget(namespace="llm", pod="a-1", address="127.0.0.1:1000"))
    assert writer.writes == writes  # unchanged set: no rewrite for Prometheus to reload
    writer.discard("llm", "b-1")
    writer.discard("llm", "never-there")
    assert [t["labels"]["pod"] for t in json.loads(path.read_text())] == ["a-1"]
    assert [p.name for p in path.parent.iterdir()] == ["targets.json"]  # no temporary files left
    assert path.stat().st_mode & 0o777 == 0o644
