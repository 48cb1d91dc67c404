"""The fleet: one model served by several variants (accelerator classes), each with its cost, bounds,
start-up time and vLLM server parameters (pure).

    model: meta-llama/Llama-3.1-8B-Instruct
    namespace: llm
    variants:
      - name: llama-8b-a100          # the Deployment and its VariantAutoscaling
        accelerator: A100-40GB
        cost: "1.94"                 # per replica-hour, a string as in the VariantAutoscaling CRD
        minReplicas: 1
        maxReplicas: 12
        initialReplicas: 1           # default: minReplicas
        startupSeconds: 60           # pod creation -> Ready (real vLLM pods take 40-240 s)
        server: {max_num_seqs: 256, kv_cache_tokens: 163840, ...}   # queueing.ServerParams

A shipped scenario describes its fleet too (`from_scenario`). docs/lab.md explains the shipped fleets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import msgspec
import yaml

from services.lab import FleetError
from services.sandbox import queueing, scenario
from shared import subjects

FLEETS: Final = Path(__file__).parent / "fleets"
DEFAULT_FLEET: Final = FLEETS / "llama-70b-a100-h100.yaml"


class Variant(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    name: str
    accelerator: str
    cost: str
    max_replicas: int
    min_replicas: int = 1
    initial_replicas: int | None = None
    startup_seconds: float = 60.0
    server: queueing.ServerParams = queueing.ServerParams()

    @property
    def cost_per_hour(self) -> float:
        return float(self.cost)

    @property
    def initial(self) -> int:
        return self.min_replicas if self.initial_replicas is None else self.initial_replicas


class Fleet(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    model: str
    variants: list[Variant]
    namespace: str = "default"
    description: str = ""

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)

    def with_startup(self, seconds: float) -> Fleet:
        """Every variant with this start-up time (the `--startup` flag)."""
        return msgspec.structs.replace(
            self, variants=[msgspec.structs.replace(v, startup_seconds=seconds) for v in self.variants]
        )


def load_fleet(path: Path) -> Fleet:
    try:
        text = path.read_text()
    except OSError as exc:
        raise FleetError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_fleet(text, source=str(path))


def parse_fleet(text: str, *, source: str = "<fleet>") -> Fleet:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FleetError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise FleetError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        fleet = msgspec.convert(raw, Fleet, strict=True)
    except msgspec.ValidationError as exc:
        raise FleetError(f"{source}: {exc}") from None
    problems = _check(fleet)
    if problems:
        raise FleetError(f"{source}: " + "; ".join(problems))
    return fleet


def from_scenario(spec: scenario.Scenario) -> Fleet:
    """The fleet of a one-model scenario (the lab simulates one model)."""
    if len(spec.models) != 1:
        raise FleetError(
            f"scenario {spec.name!r}: the lab simulates one model, the scenario has {len(spec.models)}"
        )
    model = spec.models[0]
    return Fleet(
        model=model.id,
        namespace=model.namespace,
        description=spec.description,
        variants=[
            Variant(
                name=v.name,
                accelerator=v.accelerator,
                cost=v.cost,
                min_replicas=v.min_replicas,
                max_replicas=v.max_replicas,
                initial_replicas=v.replicas,
                startup_seconds=v.startup_seconds,
                server=v.server,
            )
            for v in model.variants
        ],
    )


def _check(fleet: Fleet) -> list[str]:
    problems: list[str] = []
    try:
        subjects.validate_namespace(fleet.namespace)
    except subjects.InvalidName as exc:
        problems.append(f"namespace: {exc}")
    if not fleet.model:
        problems.append("model: must name the model")
    if not fleet.variants:
        problems.append("variants: at least one variant is needed")
    seen: set[str] = set()
    for i, v in enumerate(fleet.variants):
        where = f"variants[{i}]"
        try:
            subjects.validate_name(v.name)
        except subjects.InvalidName as exc:
            problems.append(f"{where}.name: {exc}")
        if v.name in seen:
            problems.append(f"{where}.name: {v.name!r} is used twice")
        seen.add(v.name)
        problems += scenario.variant_problems(
            where,
            cost=v.cost,
            min_replicas=v.min_replicas,
            max_replicas=v.max_replicas,
            initial_replicas=v.initial,
            startup_seconds=v.startup_seconds,
            camel=True,
        )
    return problems
