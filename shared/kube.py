"""Kubernetes access: a kubernetes-asyncio client factory and the VariantAutoscaling constants."""

from __future__ import annotations

import os
from typing import Final

from kubernetes_asyncio import client, config

GROUP: Final = "llmd.ai"
VERSION: Final = "v1alpha1"
PLURAL: Final = "variantautoscalings"
KIND: Final = "VariantAutoscaling"
API_VERSION: Final = f"{GROUP}/{VERSION}"

ACCELERATOR_LABEL: Final = "inference.optimization/acceleratorName"
CONTROLLER_INSTANCE_LABEL: Final = "wva.llmd.ai/controller-instance"
PAUSED_ANNOTATION: Final = "wva.llmd.ai/paused"
DRY_RUN_ANNOTATION: Final = "wva.llmd.ai/dry-run"


async def api_client(kubeconfig: str | None = None, *, long_lived_connections: int = 0) -> client.ApiClient:
    """A client from ``kubeconfig`` (or ``$KUBECONFIG``), or the in-cluster service account.

    ``long_lived_connections``: how many connections stay busy for long (each open watch holds one).
    kubernetes-asyncio's pool holds 100, so with many watches the plain requests would otherwise wait
    for a free connection forever. The caller closes the client (``await api.close()``).
    """
    path = kubeconfig or os.environ.get("KUBECONFIG")
    configuration = client.Configuration()
    if path:
        await config.load_kube_config(config_file=path, client_configuration=configuration)
    else:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    configuration.connection_pool_maxsize = max(100, long_lived_connections + 16)
    return client.ApiClient(configuration)
