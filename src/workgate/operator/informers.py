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

from workgate.api.wire import LABEL_MANAGED_BY, MANAGED_BY
from workgate.k8s.api import BUILDRUNS, LEASES, SIGNALS, WAITPOINTS, WORKORDERS, Body, ResourceRef
from workgate.k8s.informer import Informer
from workgate.k8s.owners import workgate_owner
from workgate.operator import lanes
from workgate.operator.cache import ObjectCache
from workgate.operator.waitpoints import WaitpointReconciler
from workgate.operator.workorders import WorkOrderReconciler

MANAGED_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
SYNC_HOLD_SECONDS = 60.0  # finished WorkOrders wait at most this long for the first lists
log = logging.getLogger(__name__)


def wire(reconciler: WorkOrderReconciler, gates: WaitpointReconciler) -> list[Informer]:
    """The informers that feed the reconcilers, for every namespace the operator serves."""
    api = reconciler.api
    gates.owner_changed = reconciler.queue.add  # a gate's own write: act before its event
    namespaces: list[str | None] = list(reconciler.config.namespaces) or [None]

    def on_workorder(type_: str, body: Body) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        reconciler.observe_workorder(key, body, deleted=type_ == "DELETED")

    def on_child(cache: ObjectCache[tuple[str, str]], lease: bool) -> Callable[[str, Body], None]:
        """Leases are cached by their WorkOrder, BuildRuns by their own name."""

        def handle(type_: str, body: Body) -> None:
            owner = workgate_owner(body)
            if owner is None:
                return
            namespace = body["metadata"]["namespace"]
            key = (namespace, owner[0] if lease else body["metadata"]["name"])
            deleted = type_ == "DELETED"
            if deleted:
                cache.deleted(key, body)
            else:
                cache.observe(key, body)
            owner_key = (namespace, owner[0])
            low = lanes.child_settled(
                reconciler.workorders.get(owner_key),
                owner[1],
                body,
                lease=lease,
                deleted=deleted,
                policy=reconciler.policy,
            )
            urgent = lease and not low and not deleted and lanes.reported(body)
            reconciler.queue.add(owner_key, low=low, urgent=urgent)

        return handle

    def on_waitpoint(type_: str, body: Body) -> None:
        owner = gates.observe_waitpoint(body, deleted=type_ == "DELETED")
        gates.queue.add((body["metadata"]["namespace"], body["metadata"]["name"]))
        reconciler.queue.add(owner)

    def on_signal(type_: str, body: Body) -> None:
        gates.queue.add(gates.observe_signal(body, deleted=type_ == "DELETED"))

    # what each kind's DELETED handler reads of its spec
    watched: list[
        tuple[ResourceRef, Callable[[str, Body], None], dict[str, str], tuple[str, ...]]
    ] = [
        (WORKORDERS, on_workorder, {}, ("workType",)),
        (LEASES, on_child(reconciler.leases, True), {"labelSelector": MANAGED_SELECTOR}, ()),
        (
            BUILDRUNS,
            on_child(reconciler.build_runs, False),
            {"labelSelector": MANAGED_SELECTOR},
            (),
        ),
        (WAITPOINTS, on_waitpoint, {}, ("workOrderName",)),
        (SIGNALS, on_signal, {}, ("waitpointName",)),
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
                    keep_spec=keep,
                )
            )
    return informers


async def run_all(
    informers: list[Informer],
    on_synced: Callable[[], None] | None = None,
    hold_seconds: float = SYNC_HOLD_SECONDS,
) -> None:
    """Run the informers; `on_synced` once all have listed (or after `hold_seconds`, when
    one has not: a collection not served, such as BuildRuns without Shipwright)."""

    async def synced() -> None:
        listed = asyncio.gather(*(informer.synced.wait() for informer in informers))
        try:
            await asyncio.wait_for(asyncio.shield(listed), hold_seconds)
        except TimeoutError:
            log.warning("not every collection is listed after %ss; going on", hold_seconds)
        if on_synced is not None:
            on_synced()
        await listed
        log.info("watches synced (%d collections): the caches are complete", len(informers))

    await asyncio.gather(synced(), *(informer.run() for informer in informers))
