"""A replica whose WorkOrder view trails its Lease view must not end a newer attempt's claim.

After an API server restart each watch re-lists on its own: a replica can hold the Lease of
attempt 2, just claimed by an agent, beside a WorkOrder still on attempt 1. Releasing that
Lease as "left over from an old attempt" would let attempt 2 be claimed, and run, twice
(bench/chaos.py caught it: one attempt executed three times). The reconciler here runs in
the test's process, its caches fed by hand with exactly that view, against the real API
server; no operator runs in the namespace (so no webhook judges the hand-made claims).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from workgate.api.wire import now_utc
from workgate.core.claims import ANNOTATION_REVOKED, LeaseView, Outcome
from workgate.core.naming import lease_name
from workgate.core.tokenkeys import KeyRing
from workgate.k8s import claims
from workgate.k8s.api import LEASES, WORKORDERS, ApiError, Body, KubeApi
from workgate.k8s.tokenkeys import TokenKeys
from workgate.operator.config import OperatorConfig
from workgate.operator.waitpoints import WaitpointReconciler
from workgate.operator.workorders import WorkOrderReconciler

from .conftest import create_workorder, wait_for, workorder

pytestmark = pytest.mark.integration


def reconciler(api: KubeApi, namespace: str) -> WorkOrderReconciler:
    # every status written at once (an unclaimed WorkOrder's PENDING too: no batching)
    config = OperatorConfig(
        identity="test-operator", namespaces=(namespace,), claimant="op", status_batch_seconds=0
    )
    keys = TokenKeys(None, "unused", KeyRing({"k1": b"k" * 32}, "k1"))
    return WorkOrderReconciler(api, config, WaitpointReconciler(api, config, keys))


async def set_status(api: KubeApi, namespace: str, name: str, **status: Any) -> Body:
    """Write status as the operator would have (its record carries observedGeneration)."""
    status = {"observedGeneration": 1, **status}
    return await api.merge_patch(WORKORDERS.path(namespace, name, "status"), {"status": status})


async def agents_claim(api: KubeApi, wo: Body, attempt: int) -> Body:
    # claimed 5 s ago: its first status is not held back (core/lifecycle_hold.py)
    lease = claims.build_lease(
        wo, lease_name(wo["metadata"]["name"]), attempt=attempt, holder="agent-a",
        duration_seconds=60, now=now_utc() - timedelta(seconds=5), instance="a",
    )  # fmt: skip
    return await claims.create_lease(api, lease)


async def lease_or_none(api: KubeApi, namespace: str, name: str) -> Body | None:
    try:
        return await api.get(LEASES.path(namespace, lease_name(name)))
    except ApiError as exc:
        if exc.not_found:
            return None
        raise


async def test_a_lagging_view_leaves_a_newer_attempts_claim_alone(
    api: KubeApi, namespace: str
) -> None:
    wo = await create_workorder(api, namespace, workorder("lag", "lint", yaml="{}"))
    operator = reconciler(api, namespace)
    key = (namespace, "lag")
    operator.workorders.observe(key, wo)

    async def pending_written() -> Body | None:
        await operator.reconcile(key)  # PENDING, attempt 1, written and cached (the
        cached = operator.workorders.get(key)  # operator's own record: observedGeneration)
        return cached if cached and (cached.get("status") or {}).get("observedGeneration") else None

    stale = await wait_for(pending_written, timeout=10, interval=0.2, what="PENDING written")
    assert stale is not None and stale["status"]["phase"] == "PENDING", stale
    # Meanwhile (unseen by this replica): attempt 1 failed, its retry came due, an agent
    # claimed attempt 2.
    await set_status(api, namespace, "lag", retryCount=1)
    lease = await agents_claim(api, wo, attempt=2)
    operator.leases.observe(key, lease)

    await operator.reconcile(key)

    kept = await lease_or_none(api, namespace, "lag")
    assert kept is not None and kept["metadata"]["uid"] == lease["metadata"]["uid"], (
        "a replica that had not seen attempt 2 deleted attempt 2's live claim"
    )
    # ...and it caught up: its cache now holds the stored WorkOrder, so its next look
    # records the claim.
    cached = operator.workorders.get(key)
    assert cached is not None and cached["status"]["retryCount"] == 1
    await operator.reconcile(key)
    now = await api.get(WORKORDERS.path(namespace, "lag"))
    assert (now["status"]["phase"], now["status"]["attempt"]) == ("CLAIMED", 2), now["status"]


async def test_a_current_view_still_ends_an_old_attempts_claim(
    api: KubeApi, namespace: str
) -> None:
    """The guard must not keep what is truly left over: attempt 1's Lease, status on 2. A
    reported one is released; one still live is revoked (its agent may still be working:
    it stops, and releases it)."""
    wo = await create_workorder(api, namespace, workorder("old", "lint", yaml="{}"))
    lease = await agents_claim(api, wo, attempt=1)
    current = await set_status(api, namespace, "old", phase="PENDING", retryCount=1)
    operator = reconciler(api, namespace)
    key = (namespace, "old")
    operator.workorders.observe(key, current)
    operator.leases.observe(key, lease)

    await operator.reconcile(key)

    kept = await lease_or_none(api, namespace, "old")
    assert kept is not None and kept["metadata"]["uid"] == lease["metadata"]["uid"]
    revoked = (kept["metadata"].get("annotations") or {}).get(ANNOTATION_REVOKED)
    assert revoked == "Superseded", "attempt 1's live claim was not told to stop"

    reported = LeaseView.from_body(kept)  # its agent reported after all: nothing is live
    await claims.report_outcome(api, namespace, reported, Outcome.FAILED, error="stopped")
    operator.leases.observe(key, await api.get(LEASES.path(namespace, lease_name("old"))))
    await operator.reconcile(key)
    assert await lease_or_none(api, namespace, "old") is None, "attempt 1's Lease was kept"
