"""Fleet files: the shipped fleet loads with the calibrated parameters it documents; every problem of
a bad file is named, with the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.lab import FleetError
from services.lab import fleet as fleets


def test_the_shipped_fleet_is_the_documented_calibration() -> None:
    fleet = fleets.load_fleet(fleets.DEFAULT_FLEET)
    a100, h100 = fleet.variants
    assert (a100.cost_per_hour, h100.cost_per_hour) == (2 * 1.94, 2 * 3.99)
    assert a100.startup_seconds == h100.startup_seconds == 60.0
    # A decode step reads 70.6 GB of weights over the pair's bandwidth (2 x 2.04 and 2 x 3.35 TB/s).
    assert a100.server.decode_base_seconds == pytest.approx(70.6 / 4.08 / 1000, rel=0.02)
    assert h100.server.decode_base_seconds == pytest.approx(70.6 / 6.70 / 1000, rel=0.02)
    # Lambda's measurement at about 85 sequences: 120.32 ms (2x A100) and 49.33 ms (2x H100) a token.
    for v, tpot in ((a100, 0.12032), (h100, 0.04933)):
        step = v.server.decode_base_seconds + 85 * v.server.decode_seconds_per_seq
        assert step == pytest.approx(tpot, rel=0.02)
    assert a100.server.kv_cache_tokens == h100.server.kv_cache_tokens == 13_350 * 16


def test_the_8b_fleet_stays_the_documented_calibration() -> None:
    fleet = fleets.load_fleet(fleets.FLEETS / "llama-8b-a100-h100.yaml")
    a100, h100 = fleet.variants
    assert (a100.cost_per_hour, h100.cost_per_hour) == (1.94, 3.99)
    # Concurrency 1 with 1,024-token prompts over 128 outputs: 8 prefill tokens per step, 13.33 ms.
    s = a100.server
    one = 8 * s.prefill_seconds_per_token + s.decode_base_seconds + s.decode_seconds_per_seq
    eight = 64 * s.prefill_seconds_per_token + s.decode_base_seconds + 8 * s.decode_seconds_per_seq
    assert one == pytest.approx(1 / 75, rel=0.01) and eight == pytest.approx(8 / (6.6 * 75), rel=0.01)
    assert h100.server.decode_base_seconds == pytest.approx(s.decode_base_seconds / 2)
    assert s.kv_cache_tokens == h100.server.kv_cache_tokens == 25_720 * 16


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model: m\nvariants: [{name: a, accelerator: x, cost: 1, maxReplicas: 2}]", "Expected `str`"),
        ("model: m\nvariants: [{name: a, accelerator: x, cost: 'cheap', maxReplicas: 2}]", "not a non-negative number"),
        ("model: m\nvariants: [{name: a, accelerator: x, cost: '1', maxReplicas: 0}]", "maxReplicas: must be >= 1"),
        ("model: m\nvariants: [{name: a, accelerator: x, cost: '1', maxReplicas: 2, initialReplicas: 5}]",
         "initialReplicas: 5 is outside 1..2"),
        ("model: m\nvariants: [{name: a, accelerator: x, cost: '1', maxReplicas: 2, startupSeconds: -1}]",
         "startupSeconds: must be >= 0"),
        ("model: m\nvariants: [{name: A_b, accelerator: x, cost: '1', maxReplicas: 2}]", r"variants\[0\]\.name: "),
        ("model: m\nvariants: [{name: a, accelerator: x, cost: '1', maxReplicas: 2, gpus: 2}]", "unknown field `gpus`"),
        ("model: m\nvariants: []", "at least one variant"),
        ("- not a mapping", "expected a mapping"),
        ("model: [unclosed", "not valid YAML"),
    ],
)  # fmt: skip
def test_a_bad_fleet_file_says_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    with pytest.raises(FleetError, match=message) as caught:
        fleets.load_fleet(path)
    assert str(caught.value).startswith(str(path))


def test_two_variants_with_one_name_are_refused() -> None:
    text = "model: m\nvariants: [{name: a, accelerator: x, cost: '1', maxReplicas: 2}, {name: a, accelerator: y, cost: '2', maxReplicas: 1}]"
    with pytest.raises(FleetError, match="'a' is used twice"):
        fleets.parse_fleet(text)
