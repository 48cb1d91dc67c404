"""The scaler: a pure decision core (this package's modules) and an I/O shell (``service.py``).

The core takes values and returns values: no I/O, no wall clock, no randomness. Time is passed in as
float seconds, so a recorded event stream replays to the same decisions (``replay.py``).

Modules::

    scaling_config  ScalingConfig, ConfigSet and the ``saturation-scaling-config`` ConfigMap parser
    saturation  the V1 saturation analysis over the replicas of a model group (docs/algorithms.md)
    choice      cost-aware choice of variant, step distribution and bounds
    reasons     stable reason codes and the WVA condition types/reasons
    actions     what the core asks the shell to do (ScaleAction, FetchAction, StatusAction) and Tick
    machine     the state machine ``Scaler.handle(event, now) -> list[Action]``
    replay      JSONL replay of recorded events against expected decisions

Exceptions::

    ValueError
    └── ScalingConfigError        invalid saturation configuration; ``.errors`` names each bad key
"""
