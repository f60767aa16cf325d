"""Asking the API server what a user may do (SubjectAccessReview), who may approve, and
whether its identity policy is in force."""

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


async def review(
    api: KubeApi,
    userinfo: Mapping[str, Any],
    verb: str,
    group: str,
    resource: str,
    namespace: str,
    *,
    name: str | None = None,
) -> tuple[bool, str]:
    """A SubjectAccessReview: may this user do that? (allowed, the API's reason). The one
    place workgate asks RBAC; `userinfo` is what admission or a Signal recorded."""
    attributes = {"verb": verb, "group": group, "resource": resource, "namespace": namespace}
    if name:
        attributes["name"] = name
    spec: dict[str, Any] = {
        "user": userinfo.get("username"),
        "groups": list(userinfo.get("groups") or []),
        "resourceAttributes": attributes,
    }
    if userinfo.get("uid"):
        spec["uid"] = userinfo["uid"]
    if userinfo.get("extra"):
        spec["extra"] = dict(userinfo["extra"])
    body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}
    result = await api.create(SUBJECT_ACCESS_REVIEWS.path(), body)
    status = result.get("status") or {}
    return bool(status.get("allowed")), str(status.get("reason") or "")


async def allowed(
    api: KubeApi,
    userinfo: Mapping[str, Any],
    verb: str,
    group: str,
    resource: str,
    namespace: str,
    *,
    name: str | None = None,
) -> bool:
    return (await review(api, userinfo, verb, group, resource, namespace, name=name))[0]


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
    userinfo = {"username": user, "groups": list(groups), "uid": uid, "extra": extra}
    return await review(api, userinfo, APPROVE_VERB, GROUP, "waitpoints", namespace, name=waitpoint)


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
