"""Claim Leases: create (atomic), renew, report and release, shared by operator and agents."""

from __future__ import annotations

from datetime import datetime

from workgate.api.wire import LABEL_WORK_TYPE
from workgate.core.claims import (
    ANNOTATION_ATTEMPT,
    ANNOTATION_ERROR,
    ANNOTATION_ERROR_REASON,
    ANNOTATION_EXIT_CODE,
    ANNOTATION_INSTANCE,
    ANNOTATION_RESULT,
    ANNOTATION_REVOKED,
    ANNOTATION_WAITPOINT,
    MAX_INSTANCE,
    LeaseView,
    Outcome,
    micro_time,
)
from workgate.core.naming import label_value
from workgate.k8s.api import LEASES, ApiError, Body, KubeApi
from workgate.k8s.owners import child_labels, owner_reference

# A claimant's renewal, report or release lost to this many writes in between gives up.
CONFLICT_TRIES = 5


def build_lease(
    workorder: Body,
    name: str,
    *,
    attempt: int,
    holder: str,
    duration_seconds: int,
    now: datetime,
    instance: str = "",
) -> Body:
    """The Lease body that claims `attempt` of `workorder` for `holder` (the claimant's
    authenticated user name; `instance` tells apart processes that share it)."""
    stamp = micro_time(now)
    annotations = {ANNOTATION_ATTEMPT: str(attempt)}
    if instance:
        annotations[ANNOTATION_INSTANCE] = instance[:MAX_INSTANCE]
    work_type = str((workorder.get("spec") or {}).get("workType", ""))
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "namespace": workorder["metadata"]["namespace"],
            "labels": {
                **child_labels(workorder["metadata"]["name"]),
                LABEL_WORK_TYPE: label_value(work_type),
            },
            "annotations": annotations,
            "ownerReferences": [owner_reference(workorder)],
        },
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": duration_seconds,
            "acquireTime": stamp,
            "renewTime": stamp,
        },
    }


class ClaimTaken(Exception):
    """Someone else holds (or just took) the claim."""


async def create_lease(api: KubeApi, lease: Body) -> Body:
    """Claim atomically: creation fails with 409 if any claim exists."""
    namespace = lease["metadata"]["namespace"]
    try:
        return await api.create(LEASES.path(namespace), lease)
    except ApiError as exc:
        if exc.conflict:
            raise ClaimTaken(lease["metadata"]["name"]) from None
        raise


async def renew_lease(api: KubeApi, namespace: str, lease: LeaseView, now: datetime) -> Body:
    """Renew only the Lease we observed: a resourceVersion conflict means we lost it."""
    return await _patch_held(api, namespace, lease, {}, {"renewTime": micro_time(now)})


async def report_outcome(
    api: KubeApi,
    namespace: str,
    lease: LeaseView,
    outcome: Outcome,
    *,
    error: str | None = None,
    reason: str | None = None,
    waitpoint_key: str | None = None,
    exit_code: int | None = None,
) -> Body:
    """Record the attempt's outcome on the held Lease, conditioned on still holding it."""
    annotations: dict[str, str | None] = {ANNOTATION_RESULT: outcome.value}
    if exit_code is not None:
        annotations[ANNOTATION_EXIT_CODE] = str(exit_code)
    if waitpoint_key is not None:
        annotations[ANNOTATION_WAITPOINT] = waitpoint_key
    if error is not None:
        annotations[ANNOTATION_ERROR] = error[:4096]
    if reason is not None:
        annotations[ANNOTATION_ERROR_REASON] = reason[:128]
    return await _patch_held(api, namespace, lease, {"annotations": annotations})


async def revoke_lease(api: KubeApi, namespace: str, lease: LeaseView, reason: str) -> Body:
    """End someone else's claim (the operator only): its holder stops and releases it."""
    return await _patch_held(
        api, namespace, lease, {"annotations": {ANNOTATION_REVOKED: reason[:128]}}
    )


async def _patch_held(
    api: KubeApi, namespace: str, lease: LeaseView, metadata: Body, spec: Body | None = None
) -> Body:
    """Change the claim Lease only as observed (its resourceVersion): ClaimTaken if it
    changed or vanished meanwhile."""
    patch: Body = {"metadata": {"resourceVersion": lease.resource_version, **metadata}}
    if spec is not None:
        patch["spec"] = spec
    try:
        return await api.merge_patch(LEASES.path(namespace, lease.name), patch)
    except ApiError as exc:
        if exc.conflict or exc.not_found:
            raise ClaimTaken(lease.name) from None
        raise


async def release_lease(api: KubeApi, namespace: str, lease: LeaseView) -> bool:
    """Delete the Lease if it is still the one observed. False if it changed meanwhile."""
    return await api.delete_if(
        LEASES.path(namespace, lease.name), lease.uid, resource_version=lease.resource_version
    )


async def release_own_lease(api: KubeApi, namespace: str, lease: LeaseView, holder: str) -> bool:
    """The claimant hands its claim back: delete the Lease while it is still this claim's
    (uid, holder, attempt). A write that lands between the read and the delete (the
    operator's revocation, a renewal's late answer) makes the delete a conflict: read it
    again and retry. True once it is gone or no longer this claim's, False if it kept
    changing (it then goes stale)."""
    path = LEASES.path(namespace, lease.name)
    view = lease
    for _ in range(CONFLICT_TRIES):
        if await api.delete_if(path, view.uid, resource_version=view.resource_version):
            return True
        try:
            view = LeaseView.from_body(await api.get(path))
        except ApiError as exc:
            if exc.not_found:
                return True
            raise
        if not view.is_claim_of(lease, holder):
            return True
    return False
