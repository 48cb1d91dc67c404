"""The watcher: the pipeline's only eye on the cluster (docs/design.md §5).

It lists, then watches, VariantAutoscalings, Deployments, ReplicaSets and Pods, keeps an in-memory
index of them, and publishes a ``Target`` per VA on ``wva.targets.<ns>.<va>`` whenever its content
changes, plus ``Invalidation`` events on ``wva.invalidate.<ns>.<va>``. It never writes to Kubernetes.

Pure core: ``kubeobjects`` (Kubernetes dicts -> our small types, VA validation), ``targets`` (types ->
``Target``), ``changes`` (old/new target -> invalidation reasons), ``index`` (the cluster index).
Shell: ``watching`` (list/watch loops), ``publishing`` (latest-state outbox), ``reconciling`` (index
changes -> outbox), ``service`` (assembly).
"""
