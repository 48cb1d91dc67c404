"""The fetcher service: reads saturation metrics for every tracked VA and publishes snapshots.

docs/design.md §4. Only this service talks to Prometheus (or to the pods' ``/metrics``); everything it knows
about the cluster arrives on ``wva.targets``.
"""
