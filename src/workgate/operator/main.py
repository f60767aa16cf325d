"""Run the operator: Kopf's watches plus workgate's reconcile queue, on one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import kopf

from workgate.k8s.api import KubeApi
from workgate.operator.config import OperatorConfig
from workgate.operator.handlers import build_registry
from workgate.operator.workorders import WorkOrderReconciler

log = logging.getLogger(__name__)


async def run_operator(
    config: OperatorConfig,
    *,
    stop: asyncio.Event | None = None,
    ready: asyncio.Event | None = None,
) -> None:
    api = KubeApi()
    reconciler = WorkOrderReconciler(api, config)
    registry = build_registry(reconciler)
    queue = asyncio.create_task(reconciler.queue.run(), name="workgate-queue")
    log.info(
        "workgate operator %s starting (local work types: %s)",
        config.identity,
        ", ".join(sorted(config.local_work_types)) or "none",
    )
    try:
        await kopf.operator(
            registry=registry,
            standalone=True,  # Leases, not Kopf peering, make claims exclusive
            clusterwide=not config.namespaces,
            namespaces=list(config.namespaces),
            stop_flag=stop,
            ready_flag=ready,
        )
    finally:
        queue.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await queue
        await api.aclose()
