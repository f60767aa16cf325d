"""SubjectAccessReview: may this requester do that? The one place workgate asks RBAC."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workgate.k8s.api import SUBJECT_ACCESS_REVIEWS, KubeApi


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
    attributes = {"verb": verb, "group": group, "resource": resource, "namespace": namespace}
    if name:
        attributes["name"] = name
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": userinfo.get("username"),
            "groups": list(userinfo.get("groups") or []),
            "uid": userinfo.get("uid"),
            "extra": dict(userinfo.get("extra") or {}),
            "resourceAttributes": attributes,
        },
    }
    result = await api.create(SUBJECT_ACCESS_REVIEWS.path(), review)
    return bool((result.get("status") or {}).get("allowed"))
