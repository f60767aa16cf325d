"""Asking the API server who may approve, and whether its identity policy is in force."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from workgate.api.common import GROUP, parse_time
from workgate.k8s.api import SUBJECT_ACCESS_REVIEWS, ApiError, KubeApi, ResourceRef

APPROVE_VERB = "approve"
MUTATING_POLICIES = ResourceRef("admissionregistration.k8s.io", "v1", "mutatingadmissionpolicies")
MUTATING_POLICY_BINDINGS = ResourceRef(
    "admissionregistration.k8s.io", "v1", "mutatingadmissionpolicybindings"
)


async def may_approve(
    api: KubeApi,
    *,
    namespace: str,
    waitpoint: str,
    user: str,
    groups: Sequence[str],
    uid: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> tuple[bool, str]:
    """Is `user` allowed the verb `approve` on this waitpoint? (allowed, the API's reason)."""
    spec: dict[str, Any] = {
        "user": user,
        "groups": list(groups),
        "resourceAttributes": {
            "verb": APPROVE_VERB,
            "group": GROUP,
            "resource": "waitpoints",
            "namespace": namespace,
            "name": waitpoint,
        },
    }
    if uid:
        spec["uid"] = uid
    if extra:
        spec["extra"] = dict(extra)
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}
    result = await api.create(SUBJECT_ACCESS_REVIEWS.path(), review)
    status = result.get("status") or {}
    return bool(status.get("allowed")), str(status.get("reason") or "")


def refusal_message(user: str, namespace: str, waitpoint: str) -> str:
    return (
        f"{user} may not approve waitpoints/{waitpoint} in namespace {namespace}: deciding "
        f"needs the RBAC verb `{APPROVE_VERB}` on waitpoints.{GROUP} (the workgate-reviewer "
        "role grants it; reading the token Secret is not enough)"
    )


async def policy_bound_at(api: KubeApi, binding: str, policy: str) -> datetime | None:
    """Since when the identity policy is bound (the later of the policy's and the binding's
    creation); None if either is missing or the binding names another policy."""
    try:
        bound = await api.get(MUTATING_POLICY_BINDINGS.path(name=binding))
        defined = await api.get(MUTATING_POLICIES.path(name=policy))
    except ApiError as exc:
        if exc.status in (403, 404):
            return None
        raise
    if (bound.get("spec") or {}).get("policyName") != policy:
        return None
    times = [parse_time(b["metadata"].get("creationTimestamp")) for b in (bound, defined)]
    return max((t for t in times if t is not None), default=None)
