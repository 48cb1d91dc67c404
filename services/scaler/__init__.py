"""The scaler: a pure decision core and an I/O shell.

The core takes values and returns values: no I/O, no wall clock, no randomness. Time is passed in as
float seconds, and everything that happens outside it (actuation outcomes, configuration) comes back
in as an event, so a recording replays to exactly the same decisions (``recording.py``).

Core modules (an import contract keeps NATS, Kubernetes and HTTP clients out of them)::

    events          what goes in besides wire messages: Tick, ScaleApplied/ScaleFailed, ConfigData, Started
    actions         what comes out: ScaleAction, FetchAction, StatusAction (the VA's whole status), ...
    core            the state machine ``Scaler.handle(event, now) -> list[Action]`` and its pipeline:
    digest            a snapshot's valid figures, its time bounded by the scaler's clock
    holds             whether a VA's inputs can be acted on, and why not
    zero              scale to zero and back
    analyzers/        one module per analyzer behind one interface (saturation: WVA's V1)
    choice            cost-aware choice of variant for a step
    pacing            scale-down stabilization as the HPA does it
    bounds            [minReplicas, maxReplicas] and the one-replica floor
    outputs           conditions and the status subresource
    reasons           stable reason codes and WVA's condition types
    scaling_config  ScalingConfig, ConfigSet and the ConfigMap parser
    replay          replay scripts; recording: a recording turned back into the core's inputs

Shell: ``service`` (tasks and queues), ``actuation`` (PATCH, status, Events), ``authority`` (which
Deployment a VA may scale, from the API), ``configsource`` (ConfigMap or file), ``telemetry``.

Exceptions::

    ValueError
    └── ScalingConfigError        invalid scaling configuration; ``.errors`` names each bad key
"""
