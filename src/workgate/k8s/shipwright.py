"""Shipwright adapter: apply the embedded objects and run one BuildRun per attempt."""

from __future__ import annotations

from typing import Any

from workgate.api.common import ConditionStatus
from workgate.api.wire import GROUP
from workgate.core.claims import ANNOTATION_ATTEMPT
from workgate.core.lifecycle import BuildRunView
from workgate.core.manifests import EmbeddedObject
from workgate.k8s.api import BUILDRUNS, ApiError, Body, KubeApi
from workgate.k8s.owners import NameTaken, child_labels, controlled_by, name_taken, owner_reference

# Shipwright's way to stop a BuildRun (it cancels the TaskRun, which stops its Pod).
BUILDRUN_CANCELED = "BuildRunCanceled"
# On an attempt's second BuildRun: why the first was replaced (lifecycle.BUILD_NOT_SEEN).
ANNOTATION_RECREATED = f"{GROUP}/recreated-after"


def build_apply_body(obj: EmbeddedObject, workorder: Body) -> Body:
    """The embedded object as workgate applies it: owned by and labelled for the WorkOrder."""
    body: dict[str, Any] = dict(obj.body)
    metadata = dict(body["metadata"])
    metadata["labels"] = {
        **(metadata.get("labels") or {}),
        **child_labels(workorder["metadata"]["name"]),
    }
    metadata["ownerReferences"] = [owner_reference(workorder)]
    body["metadata"] = metadata
    return body


def build_run_spec(
    workorder: Body, name: str, build_name: str, attempt: int, recreated_after: str = ""
) -> Body:
    meta = workorder["metadata"]
    annotations = {ANNOTATION_ATTEMPT: str(attempt)}
    if recreated_after:
        annotations[ANNOTATION_RECREATED] = recreated_after
    return {
        "apiVersion": "shipwright.io/v1beta1",
        "kind": "BuildRun",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": child_labels(meta["name"]),
            "annotations": annotations,
            "ownerReferences": [owner_reference(workorder)],
        },
        "spec": {"build": {"name": build_name}},
    }


async def apply_objects(
    api: KubeApi, workorder: Body, objects: tuple[EmbeddedObject, ...]
) -> NameTaken | None:
    """Apply the embedded objects, each only if absent or already this WorkOrder's: an
    object someone else controls (or nobody does) is reported, never taken over."""
    namespace = workorder["metadata"]["namespace"]
    uid = workorder["metadata"]["uid"]
    for obj in objects:
        resource = await api.resource_for(obj.api_version, obj.kind)
        body = build_apply_body(obj, workorder)
        try:  # the first attempt: one create, nothing to check
            await api.create(resource.path(namespace), body)
            continue
        except ApiError as exc:
            if not exc.conflict:
                raise
        path = resource.path(namespace, obj.name)
        existing = await api.get(path)
        if not controlled_by(existing, uid):
            return name_taken(obj.kind, existing)
        await api.apply(path, body)  # ours already (a retry, a restart): bring it up to date
    return None


async def create_build_run(
    api: KubeApi,
    workorder: Body,
    name: str,
    build_name: str,
    attempt: int,
    recreated_after: str = "",
) -> Body | None:
    """Create the attempt's BuildRun; None if the name exists (ours or not: the caller
    checks whose it is)."""
    namespace = workorder["metadata"]["namespace"]
    body = build_run_spec(workorder, name, build_name, attempt, recreated_after)
    try:
        return await api.create(BUILDRUNS.path(namespace), body)
    except ApiError as exc:
        if not exc.conflict:
            raise
        return None


async def cancel_build_run(api: KubeApi, namespace: str, name: str) -> None:
    try:
        await api.merge_patch(
            BUILDRUNS.path(namespace, name), {"spec": {"state": BUILDRUN_CANCELED}}
        )
    except ApiError as exc:
        if not exc.not_found:
            raise


def build_run_view(body: Body) -> BuildRunView:
    meta = body["metadata"]
    conditions = (body.get("status") or {}).get("conditions") or []
    succeeded = next((c for c in conditions if c.get("type") == "Succeeded"), None) or {}
    raw = succeeded.get("status")
    return BuildRunView(
        meta["name"],
        ConditionStatus(raw) if raw in {"True", "False", "Unknown"} else None,
        str(succeeded.get("reason") or ""),
        str(succeeded.get("message") or ""),
        cancelled=(body.get("spec") or {}).get("state") == BUILDRUN_CANCELED,
        uid=str(meta.get("uid") or ""),
        recreated=ANNOTATION_RECREATED in (meta.get("annotations") or {}),
    )
