"""An emulated Kubernetes API server for tests and the sandbox.

kubernetes-asyncio and kubectl talk to it unchanged over HTTP on 127.0.0.1. It serves core/v1 pods,
events, namespaces and configmaps, apps/v1 deployments (with `scale`) and replicasets, leases, and the
VariantAutoscaling CRD (validated against `deploy/crd/variantautoscalings.llmd.ai.yaml`), with list,
watch (history, bookmarks, 410 Expired), get, create, update, patch and delete. An in-process
deployment controller turns replica counts into pods booted through a `PodRuntime`.

Modules: `resources` (served kinds), `store` (objects, resourceVersions, change feed), `selectors`,
`patching`, `validation` (admission: defaults, CRD schema, CEL), `controller`, `runtime`, `faults`,
`routing`, `discovery`, `tables` (kubectl printing), `server` (HTTP), `emulator` (the assembly).
"""

from services.sandbox.kubeapi.emulator import KubeApiEmulator
from services.sandbox.kubeapi.faults import Faults
from services.sandbox.kubeapi.runtime import NullRuntime, PodRuntime
from services.sandbox.kubeapi.store import Change, Store, Subscription

__all__ = ["Change", "Faults", "KubeApiEmulator", "NullRuntime", "PodRuntime", "Store", "Subscription"]
