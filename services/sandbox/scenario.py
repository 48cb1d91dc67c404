"""Scenario files: the YAML that describes an emulated cluster, its traffic and what should happen.

    name: default
    duration: 180            # seconds of load
    seed: 1
    namespaces: [llm]
    models:
      - id: meta-llama/Llama-3.1-8B
        namespace: llm
        requests:            # request lengths (fixed | uniform | lognormal)
          input_tokens: {kind: lognormal, median: 512, sigma: 0.5, max: 4096}
          output_tokens: {kind: uniform, min: 64, max: 192}
        load: {kind: ramp, start_rps: 2, end_rps: 12, duration: 60}   # or constant|step|spike|sine|trace|requests
        variants:
          - name: llama-a100        # the Deployment; the VA has the same name unless `va:` says otherwise
            cost: "40"              # a string, as in the VariantAutoscaling CRD
            accelerator: A100
            min_replicas: 1
            max_replicas: 4
            initial_replicas: 1
            startup_seconds: 3      # pod creation -> Ready
            server: {max_num_seqs: 32, kv_cache_tokens: 16384}            # see queueing.ServerParams
    expectations:                   # checked at the end of a sandbox run (expectations.py)
      - {variant: llama-a100, min_replicas_reached: 3}   # also max_replicas_reached_at_most,
                                                         # final_replicas_at_most|at_least, scale_ups_at_most

Variant names are unique across a scenario so expectations can name them alone.

Exceptions::

    ValueError
    └── ScenarioError      the file cannot be read, is not YAML, or does not describe a valid scenario
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Final

import msgspec
import yaml

from services.sandbox import arrivals, load, queueing
from shared import subjects

# The CRD's pattern for spec.variantCost: a scenario the API server would refuse fails here, earlier.
_COST_RE: Final = re.compile(r"^\d+(\.\d+)?$")


class ScenarioError(ValueError):
    """A scenario that cannot be used; the message names the file and the offending field."""


class Requests(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    input_tokens: queueing.LengthDist = queueing.LogNormal(median=512, sigma=0.5, min=16, max=4096)
    output_tokens: queueing.LengthDist = queueing.Uniform(min=64, max=192)


class Variant(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    cost: str
    accelerator: str
    max_replicas: int
    min_replicas: int = 1
    initial_replicas: int | None = None  # defaults to min_replicas
    va: str | None = None  # defaults to name
    startup_seconds: float = 2.0
    server: queueing.ServerParams = queueing.ServerParams()

    @property
    def va_name(self) -> str:
        return self.va or self.name

    @property
    def replicas(self) -> int:
        return self.min_replicas if self.initial_replicas is None else self.initial_replicas


class Model(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id: str
    namespace: str
    variants: list[Variant]
    load: load.Profile | None = None  # no traffic for this model
    requests: Requests = Requests()


class Expectation(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An outcome a sandbox run should show; every given bound must hold."""

    variant: str
    min_replicas_reached: int | None = None  # at some point spec.replicas >= this
    max_replicas_reached_at_most: int | None = None  # spec.replicas never above this
    final_replicas_at_most: int | None = None
    final_replicas_at_least: int | None = None
    scale_ups_at_most: int | None = None  # increases of spec.replicas seen over the run


class Timing(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The services' intervals (seconds) this scenario's story is written for; flags override them."""

    fetch: float | None = None
    scrape: float | None = None
    reconcile: float | None = None
    stabilization: float | None = None

    def given(self) -> dict[str, float]:
        return {k: v for k, v in msgspec.structs.asdict(self).items() if v is not None}


class Scenario(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    duration: float
    namespaces: list[str]
    models: list[Model]
    description: str = ""
    seed: int = 0
    timing: Timing = Timing()
    expectations: list[Expectation] = []

    def variants(self) -> list[tuple[Model, Variant]]:
        return [(m, v) for m in self.models for v in m.variants]

    def variant(self, name: str) -> tuple[Model, Variant]:
        for model, variant in self.variants():
            if variant.name == name:
                return model, variant
        raise KeyError(name)


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; a trace's `file:` is read relative to it (a request trace's
    may also name a shipped one, `azure-conv`)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_scenario(text, source=str(path), base_dir=path.parent)


def parse_scenario(text: str, *, source: str = "<scenario>", base_dir: Path | None = None) -> Scenario:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ScenarioError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        scenario = msgspec.convert(raw, Scenario, strict=True)
    except msgspec.ValidationError as exc:
        # msgspec also wraps ServerParams.__post_init__'s QueueingError here, with the field's path.
        raise ScenarioError(f"{source}: {_explain(str(exc))}") from None
    scenario = _resolve_traces(scenario, source=source, base_dir=base_dir)
    problems = _check(scenario)
    if problems:
        raise ScenarioError(f"{source}: " + "; ".join(problems))
    return scenario


def _explain(message: str) -> str:
    # YAML reads `cost: 40` as a number; the CRD wants a string, so say how to write one.
    if message.endswith(".cost`") and ("got `int`" in message or "got `float`" in message):
        return message + ' (quote it: cost: "40")'
    return message


def _resolve_traces(scenario: Scenario, *, source: str, base_dir: Path | None) -> Scenario:
    models: list[Model] = []
    for i, model in enumerate(scenario.models):
        profile = model.load
        if isinstance(profile, load.Trace) and profile.file is not None:
            csv_path = Path(profile.file)
            if not csv_path.is_absolute():
                csv_path = (base_dir or Path.cwd()) / csv_path
            try:
                points = load.read_trace_csv(csv_path)
            except (OSError, load.TraceError) as exc:
                raise ScenarioError(f"{source}: models[{i}].load: {exc}") from None
            profile = msgspec.structs.replace(profile, points=points, file=str(csv_path))
            model = msgspec.structs.replace(model, load=profile)
        elif isinstance(profile, load.Requests):
            path = arrivals.SHIPPED.get(profile.file, Path(profile.file))
            if not path.is_absolute():
                path = (base_dir or Path.cwd()) / path
            try:
                profile = profile.resolved(path)
            except load.TraceError as exc:
                raise ScenarioError(f"{source}: models[{i}].load: {exc}") from None
            model = msgspec.structs.replace(model, load=profile)
        models.append(model)
    return msgspec.structs.replace(scenario, models=models)


def _check(s: Scenario) -> list[str]:
    """Semantic checks msgspec's types cannot express; every problem is reported, not just the first."""
    problems: list[str] = []
    if not (s.duration > 0 and math.isfinite(s.duration)):
        problems.append(f"duration must be a positive number of seconds, got {s.duration}")
    for ns in s.namespaces:
        problems += _name_problem("namespaces", ns, namespace=True)
    if not s.models:
        problems.append("models: at least one model is needed")
    seen: dict[str, str] = {}
    for i, model in enumerate(s.models):
        where = f"models[{i}]"
        if model.namespace not in s.namespaces:
            problems.append(f"{where}.namespace: {model.namespace!r} is not in namespaces {s.namespaces}")
        if not model.variants:
            problems.append(f"{where}.variants: at least one variant is needed")
        problems += _profile_problems(f"{where}.load", model.load)
        if isinstance(model.load, load.Requests) and not any(t < s.duration for t, _, _ in model.load.requests):
            problems.append(f"{where}.load: no request of {model.load.file} within the scenario's {s.duration:g}s")
        for field in ("input_tokens", "output_tokens"):
            lo, hi = queueing.length_bounds(getattr(model.requests, field))
            if lo < 1 or hi < lo:
                problems.append(
                    f"{where}.requests.{field}: lengths must satisfy 1 <= min <= max, got {lo}..{hi}"
                )
        _, max_in = queueing.length_bounds(model.requests.input_tokens)
        _, max_out = queueing.length_bounds(model.requests.output_tokens)
        if isinstance(model.load, load.Requests) and model.load.requests:  # the trace's own lengths
            max_in, max_out = max((i + o, i, o) for _, i, o in model.load.requests)[1:]
        for j, v in enumerate(model.variants):
            vwhere = f"{where}.variants[{j}]"
            problems += _name_problem(f"{vwhere}.name", v.name)
            if v.va is not None:
                problems += _name_problem(f"{vwhere}.va", v.va)
            if v.name in seen:
                problems.append(f"{vwhere}.name: {v.name!r} is already used by {seen[v.name]}")
            seen[v.name] = vwhere
            problems += variant_problems(
                vwhere,
                cost=v.cost,
                min_replicas=v.min_replicas,
                max_replicas=v.max_replicas,
                initial_replicas=v.replicas,
                startup_seconds=v.startup_seconds,
            )
            if max_in + max_out > v.server.kv_cache_tokens:
                problems.append(
                    f"{vwhere}.server.kv_cache_tokens: {v.server.kv_cache_tokens} cannot hold the largest request "
                    f"({max_in} + {max_out} tokens)"
                )
    for k, e in enumerate(s.expectations):
        if e.variant not in seen:
            problems.append(
                f"expectations[{k}].variant: no variant named {e.variant!r} (have {sorted(seen)})"
            )
        bounds = (e.min_replicas_reached, e.max_replicas_reached_at_most, e.final_replicas_at_most,
                  e.final_replicas_at_least, e.scale_ups_at_most)  # fmt: skip
        if all(b is None for b in bounds):
            problems.append(f"expectations[{k}]: states no bound")
    return problems


def variant_problems(
    where: str,
    *,
    cost: str,
    min_replicas: int,
    max_replicas: int,
    initial_replicas: int,
    startup_seconds: float,
    camel: bool = False,
) -> list[str]:
    """What is wrong with a variant's cost, bounds and start-up (also the decision lab's fleet files,
    whose keys are camelCase: `camel=True` names them so)."""

    def key(snake: str) -> str:
        head, *rest = snake.split("_")
        return head + "".join(w.title() for w in rest) if camel else snake

    problems: list[str] = []
    if not _COST_RE.match(cost):
        problems.append(f"{where}.cost: {cost!r} is not a non-negative number (digits, optional decimals)")
    if max_replicas < 1:
        problems.append(f"{where}.{key('max_replicas')}: must be >= 1, got {max_replicas}")
    elif not 0 <= min_replicas <= max_replicas:
        problems.append(
            f"{where}: need 0 <= {key('min_replicas')} <= {key('max_replicas')}, got {min_replicas}..{max_replicas}"
        )
    elif not min_replicas <= initial_replicas <= max_replicas:
        problems.append(
            f"{where}.{key('initial_replicas')}: {initial_replicas} is outside {min_replicas}..{max_replicas}"
        )
    if not (startup_seconds >= 0 and math.isfinite(startup_seconds)):
        problems.append(f"{where}.{key('startup_seconds')}: must be >= 0")
    return problems


def _name_problem(where: str, name: str, *, namespace: bool = False) -> list[str]:
    try:
        (subjects.validate_namespace if namespace else subjects.validate_name)(name)
    except subjects.InvalidName as exc:
        return [f"{where}: {exc}"]
    return []


def _profile_problems(where: str, profile: load.Profile | None) -> list[str]:
    if profile is None:
        return []
    numbers: dict[str, Any] = {
        f: getattr(profile, f)
        for f in profile.__struct_fields__
        if isinstance(getattr(profile, f), int | float)
    }
    problems = [f"{where}.{f}: must be >= 0, got {v}" for f, v in numbers.items() if v < 0 and f != "phase"]
    if isinstance(profile, load.Ramp | load.Sine | load.Spike):
        span = profile.period if isinstance(profile, load.Sine) else profile.duration
        if span <= 0:
            problems.append(f"{where}: duration/period must be > 0")
    if isinstance(profile, load.Trace) and not profile.points:
        problems.append(f"{where}: a trace needs `points` or `file`")
    return problems
