"""Run the operator: Kopf's watches plus workgate's reconcile queue, on one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import replace
from typing import Any

import kopf

from workgate.agent.client import retrying, whoami
from workgate.k8s.api import KubeApi
from workgate.k8s.tokenkeys import TokenKeys
from workgate.operator import informers
from workgate.operator.config import OperatorConfig
from workgate.operator.handlers import build_registry
from workgate.operator.leader import LeaderElector
from workgate.operator.metrics import OperatorMetrics, serve_metrics
from workgate.operator.waitpoints import WaitpointReconciler
from workgate.operator.webhooks import remove_webhook_configurations
from workgate.operator.workorders import WorkOrderReconciler

log = logging.getLogger(__name__)
EVENT_FLUSH_SECONDS = 2.0  # on the way out, queued Events get this long to be sent


async def _on_lead(leader: LeaderElector, reconciler: WorkOrderReconciler) -> None:
    while True:
        await leader.became_leader.wait()
        leader.became_leader.clear()
        reconciler.took_the_lead()


async def run_operator(
    config: OperatorConfig,
    *,
    stop: asyncio.Event | None = None,
    ready: asyncio.Event | None = None,
) -> None:
    api = KubeApi()
    if config.claimant is None:  # claims are made as the user the API server sees
        config = replace(config, claimant=await retrying(lambda: whoami(api), what="who am I"))
    keys = await retrying(
        lambda: TokenKeys.load(
            api, config.operator_namespace, refresh_seconds=config.token_key_refresh_seconds
        ),
        what="loading the token keys",
    )
    metrics = OperatorMetrics()
    gates = WaitpointReconciler(api, config, keys, metrics)
    reconciler = WorkOrderReconciler(api, config, gates, metrics)
    metrics.set_workorder_source(reconciler.workorder_rows)
    sink = gates.events
    metrics.set_event_source(lambda: (sink.posted, sink.failed, sink.dropped))
    metrics_runner = (
        await serve_metrics(config.metrics_port, metrics.registry)
        if config.metrics_port is not None
        else None
    )
    registry = build_registry(reconciler, gates)
    events = asyncio.create_task(gates.events.run(), name="workgate-events")
    queues = [
        asyncio.create_task(reconciler.queue.run(), name="workgate-workorders"),
        asyncio.create_task(gates.queue.run(), name="workgate-waitpoints"),
        asyncio.create_task(
            informers.run_all(informers.wire(reconciler, gates), reconciler.queue.open_low),
            name="watches",
        ),
    ]
    if config.concurrency_limits:  # one replica gives limited work types' slots away
        leader = LeaderElector(
            api,
            config.operator_namespace,
            config.admission_lease,
            f"{config.identity}/{uuid.uuid4().hex[:8]}",
        )
        reconciler.leader = leader
        queues.append(asyncio.create_task(leader.run(), name="workgate-leader"))
        queues.append(asyncio.create_task(_on_lead(leader, reconciler), name="workgate-lead"))

    @kopf.on.cleanup(registry=registry)
    async def stop_queues(**_: Any) -> None:
        # Kopf waits a while for tasks it did not start; ours end with its watches.
        for queue in queues:
            queue.cancel()
        await gates.events.flush(EVENT_FLUSH_SECONDS)  # the last transitions' Events
        events.cancel()

    log.info(
        "workgate operator %s (claims as %s) starting (local work types: %s)",
        config.identity,
        config.claimant,
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
            liveness_endpoint=config.liveness_endpoint,
        )
    finally:
        for queue in [*queues, events]:
            queue.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await queue
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        if config.webhook and config.webhook_cleanup:
            await remove_webhook_configurations(api, config.webhook_config_name)
            log.info("removed webhook configuration %s", config.webhook_config_name)
        await api.aclose()
