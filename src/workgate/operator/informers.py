"""The operator's watches: WorkOrders, their claim Leases and BuildRuns, Waitpoints and
Signals, each listed once and watched (k8s/informer.py), into the caches and work queues.

Only what workgate owns is watched: its custom resources, and Leases and BuildRuns
labelled `app.kubernetes.io/managed-by=workgate` (filtered by the API server: a real
cluster has a node heartbeat Lease per node renewed every 10 s), in the operator's
namespaces or cluster-wide. Kopf is left the admission webhooks: its per-event machinery
(a memory entry, loggers, a throttler and batching per object) cost more CPU than the
operator's own decisions (bench/job_bench.py's profile).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from workgate.api.wire import LABEL_MANAGED_BY, MANAGED_BY
from workgate.k8s.api import BUILDRUNS, LEASES, SIGNALS, WAITPOINTS, WORKORDERS, Body, ResourceRef
from workgate.k8s.informer import Informer, metadata_stub
from workgate.k8s.owners import workgate_owner
from workgate.operator.cache import ObjectCache
from workgate.operator.waitpoints import WaitpointReconciler
from workgate.operator.workorders import WorkOrderReconciler

MANAGED_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
log = logging.getLogger(__name__)


def _keeping(*fields: str) -> Callable[[Body], Body]:
    """A stub of the metadata plus the spec fields a DELETED handler reads."""

    def keep(body: Body) -> Body:
        stub = metadata_stub(body)
        spec = body.get("spec") or {}
        stub["spec"] = {f: spec[f] for f in fields if f in spec}
        return stub

    return keep


def wire(reconciler: WorkOrderReconciler, gates: WaitpointReconciler) -> list[Informer]:
    """The informers that feed the reconcilers, for every namespace the operator serves."""
    api = reconciler.api
    gates.owner_changed = reconciler.queue.add  # a gate's own write: act before its event
    namespaces: list[str | None] = list(reconciler.config.namespaces) or [None]

    def on_workorder(type_: str, body: Body) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        reconciler.observe_workorder(key, body, deleted=type_ == "DELETED")

    def on_child(
        cache: ObjectCache[tuple[str, str]], by_owner: bool
    ) -> Callable[[str, Body], None]:
        """Leases are cached by their WorkOrder, BuildRuns by their own name."""

        def handle(type_: str, body: Body) -> None:
            owner = workgate_owner(body)
            if owner is None:
                return
            namespace = body["metadata"]["namespace"]
            key = (namespace, owner[0] if by_owner else body["metadata"]["name"])
            if type_ == "DELETED":
                cache.deleted(key, body)
            else:
                cache.observe(key, body)
            reconciler.queue.add((namespace, owner[0]))

        return handle

    def on_waitpoint(type_: str, body: Body) -> None:
        owner = gates.observe_waitpoint(body, deleted=type_ == "DELETED")
        gates.queue.add((body["metadata"]["namespace"], body["metadata"]["name"]))
        reconciler.queue.add(owner)

    def on_signal(type_: str, body: Body) -> None:
        gates.queue.add(gates.observe_signal(body, deleted=type_ == "DELETED"))

    watched: list[tuple[ResourceRef, Callable[[str, Body], None], dict[str, str], Any]] = [
        (WORKORDERS, on_workorder, {}, _keeping("workType")),
        (LEASES, on_child(reconciler.leases, True), {"labelSelector": MANAGED_SELECTOR}, None),
        (
            BUILDRUNS,
            on_child(reconciler.build_runs, False),
            {"labelSelector": MANAGED_SELECTOR},
            None,
        ),
        (WAITPOINTS, on_waitpoint, {}, _keeping("workOrderName")),
        (SIGNALS, on_signal, {}, _keeping("waitpointName")),
    ]
    informers = []
    for namespace in namespaces:
        for resource, handler, params, keep in watched:
            informers.append(
                Informer(
                    api,
                    resource.path(namespace),
                    handler,
                    params=params,
                    keep=keep or metadata_stub,
                )
            )
    return informers


async def run_all(informers: list[Informer]) -> None:
    async def synced() -> None:
        await asyncio.gather(*(informer.synced.wait() for informer in informers))
        log.info("watches synced (%d collections): the caches are complete", len(informers))

    await asyncio.gather(synced(), *(informer.run() for informer in informers))
