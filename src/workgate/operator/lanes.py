"""Which lane of the work queue a watch event's WorkOrder goes to (operator/queue.py).

A restarted operator lists every WorkOrder with its claim Lease and BuildRun: mostly
finished ones, whose reconcile changes nothing (it starts a TTL timer). They go to the low
lane, so the pending and active WorkOrders listed beside them are reconciled first; a
finished one is still reconciled, only later. Anything that may ask for work goes to the
normal lane: a phase that is not terminal, a spec or rerun request the status has not
caught up with, a deletion, or a live claim on a finished WorkOrder (revoked or released
at once, not after the backlog). An agent's report on a claim Lease of a WorkOrder not
yet settled is urgent: it goes before new work, which agents claim without the operator.
A finished BuildRun is not: the operator's own new work starts only when it looks at it
(BuildRuns created early keep Shipwright busy), and recording outcomes first cost the
build path about 4% of its throughput (bench/job_bench.py --parts workgate, ABBA).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workgate.api.wire import TERMINAL_PHASES, Phase, rerun_request
from workgate.core.claims import ANNOTATION_RESULT
from workgate.core.decisions import Policy

Body = Mapping[str, Any]


def settled(workorder: Body) -> bool:
    """Finished and up to date: nothing was asked of it since its status was written."""
    meta = workorder.get("metadata") or {}
    status = workorder.get("status") or {}
    if status.get("phase") not in TERMINAL_PHASES or meta.get("deletionTimestamp"):
        return False
    if status.get("observedGeneration") != meta.get("generation"):
        return False  # a spec change (spec.cancel, a TTL) the status does not reflect yet
    rerun = rerun_request(meta)
    return rerun is None or rerun == status.get("rerun")


def child_settled(
    owner: Body | None, owner_uid: str, child: Body, *, lease: bool, deleted: bool, policy: Policy
) -> bool:
    """May the event of a WorkOrder's child (its Lease or a BuildRun) wait in the low lane?

    Yes when the WorkOrder is settled, or not known (yet: its own event queues it where it
    belongs; or gone: there is nothing to reconcile), or another of that name (the child
    of a deleted namesake). A Lease that is live on a settled WorkOrder is the exception:
    one without an outcome, unless it is the operator's own claim on a SUCCEEDED WorkOrder
    of its own work type (the record it keeps of a successful attempt)."""
    if owner is None or str((owner.get("metadata") or {}).get("uid", "")) != owner_uid:
        return True
    if not settled(owner):
        return False
    if not lease or deleted:
        return True
    meta = child.get("metadata") or {}
    if (meta.get("annotations") or {}).get(ANNOTATION_RESULT):
        return True
    local = (owner.get("spec") or {}).get("workType") in policy.local_work_types
    own = local and (child.get("spec") or {}).get("holderIdentity") == policy.identity
    return own and (owner.get("status") or {}).get("phase") == Phase.SUCCEEDED


def reported(lease: Body) -> bool:
    """Does the claim Lease carry an agent's report of its attempt's outcome?"""
    return bool(((lease.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_RESULT))
