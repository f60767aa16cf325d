"""Waitpoint, token Secret and Signal I/O."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from workgate.api.common import API_VERSION, GROUP, format_time
from workgate.api.waitpoint import ApprovalRules, CloseReason, Rejection, WaitpointState
from workgate.api.workorder import Gate
from workgate.core.approvals import rules_key
from workgate.core.lifecycle import WaitpointView
from workgate.k8s.api import SECRETS, SIGNALS, WAITPOINTS, ApiError, Body, KubeApi
from workgate.k8s.owners import (
    NameTaken,
    child_labels,
    controlled_by,
    name_taken,
    owner_reference,
)

# Identities recorded at admission (see operator/identity_admission.py): who sent a Signal,
# with their groups, and who created a WorkOrder. Users cannot set them to anyone else.
ANNOTATION_SENDER = f"{GROUP}/sender"
ANNOTATION_SENDER_GROUPS = f"{GROUP}/sender-groups"
ANNOTATION_CREATED_BY = f"{GROUP}/created-by"
ANNOTATION_TOKEN_KEY_ID = f"{GROUP}/token-key-id"
# On a Dynamic waitpoint: the suspending claimant's X25519 public key (base64); the
# operator seals the token to it in status.sealedToken.
ANNOTATION_RECIPIENT_KEY = f"{GROUP}/token-recipient-key"
LABEL_WAITPOINT = f"{GROUP}/waitpoint"
TOKEN_KEY = "token"
OPERATOR_KEY_SECRET = "workgate-token-key"


def waitpoint_view(body: Body) -> WaitpointView:
    status = body.get("status") or {}
    state = status.get("state")
    reason = status.get("closeReason")
    try:
        rejection = Rejection.model_validate(status["rejection"])
    except (KeyError, ValidationError):
        rejection = None
    return WaitpointView(
        name=body["metadata"]["name"],
        key=body["spec"]["key"],
        state=WaitpointState(state) if state in set(WaitpointState) else None,
        close_reason=CloseReason(reason) if reason in set(CloseReason) else None,
        uid=body["metadata"].get("uid", ""),
        resource_version=body["metadata"].get("resourceVersion", ""),
        stage=str(body["spec"].get("stage", "")),
        required_signal_names=tuple(body["spec"].get("requiredSignalNames") or ()),
        timeout_seconds=body["spec"].get("timeoutSeconds"),
        on_timeout=str(body["spec"].get("onTimeout", "Fail")),
        approval_rules=rules_key(body["spec"]),
        rejection=rejection,
    )


def _waitpoint(
    workorder: Body, name: str, spec: dict[str, Any], annotations: dict[str, str]
) -> Body:
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": workorder["metadata"]["namespace"],
        "labels": child_labels(workorder["metadata"]["name"]),
        "ownerReferences": [owner_reference(workorder)],
    }
    if annotations:
        metadata["annotations"] = annotations
    spec = {"workOrderName": workorder["metadata"]["name"], **spec}
    if spec.get("timeoutSeconds") is None:
        spec.pop("timeoutSeconds", None)
    return {"apiVersion": API_VERSION, "kind": "Waitpoint", "metadata": metadata, "spec": spec}


def build_waitpoint(workorder: Body, name: str, gate: Gate) -> Body:
    """The Waitpoint of a declared gate."""
    spec = {
        "key": gate.key,
        "stage": gate.stage,
        "requiredSignalNames": list(gate.required_signal_names),
        "timeoutSeconds": gate.timeout_seconds,
        "onTimeout": gate.on_timeout,
        **ApprovalRules.model_validate(gate.model_dump()).to_wire(),
    }
    return _waitpoint(workorder, name, spec, {})


async def create_waitpoint(api: KubeApi, body: Body) -> Body | None:
    """Create it; None when it exists already (a restart re-running the step)."""
    try:
        return await api.create(WAITPOINTS.path(body["metadata"]["namespace"]), body)
    except ApiError as exc:
        if exc.conflict:
            return None
        raise


async def patch_status(
    api: KubeApi, ref_path: str, resource_version: str, status: dict[str, Any]
) -> Body | None:
    """Merge-patch status if the object is still at `resource_version`; None if it moved."""
    try:
        return await api.merge_patch(
            f"{ref_path}/status",
            {"metadata": {"resourceVersion": resource_version}, "status": status},
        )
    except ApiError as exc:
        if exc.conflict or exc.not_found:
            return None
        raise


async def activate(
    api: KubeApi, namespace: str, view: WaitpointView, now: datetime, timeout_seconds: int | None
) -> Body | None:
    status: dict[str, Any] = {"state": WaitpointState.ACTIVE, "activatedAt": format_time(now)}
    if timeout_seconds is not None:
        status["expiresAt"] = format_time(now + timedelta(seconds=timeout_seconds))
    return await patch_status(
        api, WAITPOINTS.path(namespace, view.name), view.resource_version, status
    )


async def cancel(api: KubeApi, namespace: str, view: WaitpointView, now: datetime) -> Body | None:
    status = {
        "state": WaitpointState.CLOSED,
        "closedAt": format_time(now),
        "closeReason": CloseReason.CANCELLED,
    }
    return await patch_status(
        api, WAITPOINTS.path(namespace, view.name), view.resource_version, status
    )


def build_token_secret(waitpoint: Body, name: str, token: str, key_id: str = "") -> Body:
    meta = waitpoint["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "annotations": {ANNOTATION_TOKEN_KEY_ID: key_id},
            "labels": {
                **child_labels(waitpoint["spec"]["workOrderName"]),
                LABEL_WAITPOINT: meta["name"][:63],
            },
            "ownerReferences": [owner_reference(waitpoint, "Waitpoint")],
        },
        "data": {TOKEN_KEY: base64.b64encode(token.encode()).decode()},
    }


async def ensure_token_secret(
    api: KubeApi, waitpoint: Body, name: str, token: str, key_id: str = ""
) -> NameTaken | None:
    """Create the token Secret; the token is deterministic (for the key id the waitpoint
    recorded before this), so an existing one this waitpoint controls is the same. One it
    does not control (planted under the name, or a namesake's) is reported, never adopted."""
    path = SECRETS.path(waitpoint["metadata"]["namespace"])
    try:
        await api.create(path, build_token_secret(waitpoint, name, token, key_id))
        return None
    except ApiError as exc:
        if not exc.conflict:
            raise
    try:
        existing = await api.get(SECRETS.path(waitpoint["metadata"]["namespace"], name))
    except ApiError as exc:
        if exc.not_found:  # deleted meanwhile: the next round creates it
            return None
        raise
    if controlled_by(existing, str(waitpoint["metadata"]["uid"])):
        return None
    return name_taken("Secret", existing, "this Waitpoint")


async def get_or_create_secret(api: KubeApi, namespace: str, name: str, make: Any) -> Body:
    """The Secret `name`, created from `make()` (a `data` dict) if absent: first writer wins."""
    path = SECRETS.path(namespace, name)
    try:
        return await api.get(path)
    except ApiError as exc:
        if not exc.not_found:
            raise
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": name, "namespace": namespace},
        "data": make(),
    }
    try:
        return await api.create(SECRETS.path(namespace), body)
    except ApiError as exc:
        if not exc.conflict:
            raise
        return await api.get(path)


def build_dynamic_waitpoint(
    workorder: Body,
    name: str,
    *,
    key: str,
    required_signal_names: list[str],
    timeout_seconds: int | None,
    on_timeout: str,
    recipient_key: str,
) -> Body:
    """The Waitpoint an agent creates to suspend the WorkOrder it holds."""
    spec = {
        "key": key,
        "stage": "Dynamic",
        "requiredSignalNames": required_signal_names,
        "timeoutSeconds": timeout_seconds,
        "onTimeout": on_timeout,
    }
    return _waitpoint(workorder, name, spec, {ANNOTATION_RECIPIENT_KEY: recipient_key})


def signal_path(namespace: str, name: str) -> str:
    return SIGNALS.path(namespace, name)
