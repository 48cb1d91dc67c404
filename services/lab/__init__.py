"""The decision lab (`wva lab`): hours of traffic through the production decision code in seconds.

A discrete-event simulation in simulated time (docs/lab.md): arrivals from a trace or a scenario, the
sandbox's vLLM replica model per pod, the inference gateway's queue, a deployment controller with
pod start-up, Prometheus-like sampling and the fetcher's cycle, and one autoscaling policy — the
production scaler core or a baseline — deciding on what it would see live. Everything but the CLI
(`command`), its progress display and the files it writes is a pure function of its inputs and seed.

Modules::

    traffic      arrivals: a trace file (CSV, one row per request) or a shipped scenario; scale, window
    fleet        the model's variants: cost, bounds, start-up, server parameters (YAML)
    cluster      pods, the deployment controller, the gateway in front of the pods, request outcomes
    observation  Prometheus-like scrapes and queries, and the fetcher's snapshot assembly
    hpa          the Kubernetes HPA algorithm (replica calculators, behaviour, stabilization)
    policies/    one module per policy: hpa_kv, keda_queue, static_peak, oracle (+ base, the interface)
    wva_policy   the adapter that drives the production scaler core, exactly as its shell does
    simulation   the event loop that runs one policy on one traffic
    scoring      per-policy figures: SLO attainment, latency percentiles, cost, reaction times
    report       the terminal table and the self-contained HTML report
    runner       runs several policies (in parallel processes) and collects their results
    command      `wva lab`

Exceptions::

    ValueError
    └── LabError            an input the lab cannot use; the message says which and why
        ├── TraceError      a trace that cannot be read (names the file and the line)
        ├── FleetError      a fleet file that does not describe a usable fleet
        └── PolicyError     a --policy that names no policy, or a wva configuration that is invalid
"""


class LabError(ValueError):
    """An input the lab cannot use."""


class TraceError(LabError):
    """A trace that cannot be read; the message names the file and the line."""


class FleetError(LabError):
    """A fleet file that does not describe a usable fleet."""


class PolicyError(LabError):
    """A policy that cannot be built."""
