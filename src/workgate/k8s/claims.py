"""Claim Leases: create (atomic), renew, report and release, shared by operator and agents."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from workgate.api.common import API_VERSION, LABEL_MANAGED_BY, LABEL_WORKORDER, MANAGED_BY
from workgate.core.claims import (
    ANNOTATION_ATTEMPT,
    ANNOTATION_ERROR,
    ANNOTATION_ERROR_REASON,
    ANNOTATION_RESULT,
    ANNOTATION_WAITPOINT,
    LeaseView,
    Outcome,
    micro_time,
)
from workgate.core.naming import label_value
from workgate.k8s.api import LEASES, ApiError, Body, KubeApi


def owner_reference(workorder: Body) -> dict[str, Any]:
    meta = workorder["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": "WorkOrder",
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
    }


def child_labels(workorder_name: str) -> dict[str, str]:
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_WORKORDER: label_value(workorder_name)}


def build_lease(
    workorder: Body, name: str, *, attempt: int, holder: str, duration_seconds: int, now: datetime
) -> Body:
    """The Lease body that claims `attempt` of `workorder` for `holder`."""
    stamp = micro_time(now)
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "namespace": workorder["metadata"]["namespace"],
            "labels": child_labels(workorder["metadata"]["name"]),
            "annotations": {ANNOTATION_ATTEMPT: str(attempt)},
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
    patch = {
        "metadata": {"resourceVersion": lease.resource_version},
        "spec": {"renewTime": micro_time(now)},
    }
    try:
        return await api.merge_patch(LEASES.path(namespace, lease.name), patch)
    except ApiError as exc:
        if exc.conflict or exc.not_found:
            raise ClaimTaken(lease.name) from None
        raise


async def report_outcome(
    api: KubeApi,
    namespace: str,
    lease: LeaseView,
    outcome: Outcome,
    *,
    error: str | None = None,
    reason: str | None = None,
    waitpoint_key: str | None = None,
) -> Body:
    """Record the attempt's outcome on the held Lease, conditioned on still holding it."""
    annotations: dict[str, str | None] = {ANNOTATION_RESULT: outcome.value}
    if waitpoint_key is not None:
        annotations[ANNOTATION_WAITPOINT] = waitpoint_key
    if error is not None:
        annotations[ANNOTATION_ERROR] = error[:4096]
    if reason is not None:
        annotations[ANNOTATION_ERROR_REASON] = reason[:128]
    patch = {"metadata": {"resourceVersion": lease.resource_version, "annotations": annotations}}
    try:
        return await api.merge_patch(LEASES.path(namespace, lease.name), patch)
    except ApiError as exc:
        if exc.conflict or exc.not_found:
            raise ClaimTaken(lease.name) from None
        raise


async def release_lease(api: KubeApi, namespace: str, lease: LeaseView) -> bool:
    """Delete the Lease if it is still the one observed. False if it changed meanwhile."""
    try:
        await api.delete(
            LEASES.path(namespace, lease.name),
            uid=lease.uid,
            resource_version=lease.resource_version,
        )
    except ApiError as exc:
        if exc.not_found:
            return True
        if exc.conflict:
            return False
        raise
    return True
