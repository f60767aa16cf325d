"""Admission for approvals: who created a WorkOrder, and whether a Signal may decide.

- WorkOrders (mutating): on CREATE, the annotation workgate.io/created-by is set to the
  requesting user, whatever the manifest says; on UPDATE it is put back to what it was, so
  nobody can forge or change it. A GitOps tool that applies without the annotation (even
  with server-side apply, which would drop a field its manager once set) ends with the same
  object, so there is no drift to fight over.
- Signals (validating): the full judgement of `operator.judging` with the requesting user,
  so a refusal is immediate and clear at `kubectl apply`; the controller judges again
  (reusing, through `judging.Permits`, the RBAC verdict admission got for this very
  Signal, by its API-server-assigned uid).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import kopf
from pydantic import ValidationError

from workgate.api.waitpoint import SignalSpec, WaitpointStatus
from workgate.core import approvals
from workgate.core import signals as rules
from workgate.k8s.api import WAITPOINTS, ApiError, Body, KubeApi
from workgate.k8s.tokenkeys import TokenKeys
from workgate.k8s.waitpoints import (
    ANNOTATION_CREATED_BY,
    ANNOTATION_SENDER,
    ANNOTATION_SENDER_GROUPS,
)
from workgate.operator.judging import Candidate, Permits, judge


def stamp_creator(
    operation: str, old: Body | None, userinfo: kopf.UserInfo, patch: kopf.Patch
) -> None:
    """Record the creating user; keep the record unchanged on every later update."""
    if operation == "CREATE":
        patch.metadata.annotations[ANNOTATION_CREATED_BY] = str(userinfo.get("username", ""))
        return
    previous = ((old or {}).get("metadata", {}).get("annotations") or {}).get(ANNOTATION_CREATED_BY)
    patch.metadata.annotations[ANNOTATION_CREATED_BY] = previous  # None removes a forgery


def sender_changed(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> str | None:
    """A Signal's recorded sender is fixed at creation: what an update may not change."""

    def recorded(body: Mapping[str, Any] | None) -> tuple[Any, Any]:
        annotations = ((body or {}).get("metadata") or {}).get("annotations") or {}
        return annotations.get(ANNOTATION_SENDER), annotations.get(ANNOTATION_SENDER_GROUPS)

    if recorded(old) != recorded(new):
        return (
            f"metadata.annotations[{ANNOTATION_SENDER}] and [{ANNOTATION_SENDER_GROUPS}] are "
            "recorded at creation and cannot change"
        )
    return None


async def admit_signal(
    api: KubeApi,
    keys: TokenKeys,
    default_algorithm: str,
    body: Mapping[str, Any],
    userinfo: kopf.UserInfo,
    cached: Body | None = None,
    permits: Permits | None = None,
) -> tuple[rules.Refusal, str, int] | None:
    """None to admit, else (reason, message, HTTP code) to refuse.

    `cached`: the waitpoint as the operator's watch last showed it. A signal it admits is
    admitted without reading the waitpoint (a consistent read costs the API server an etcd
    round trip, the larger part of admission under load); the controller judges again
    with what the waitpoint is then, so a view a moment old admits nothing that counts
    wrongly. It never refuses: a refusal is decided on the waitpoint as read now."""
    namespace = body["metadata"].get("namespace", "")
    spec = body.get("spec") or {}
    waitpoint = str(spec.get("waitpointName", ""))
    if (
        cached is not None
        and await _judged(api, keys, default_algorithm, body, userinfo, cached, permits) is None
    ):
        return None
    try:
        wp = await api.get(WAITPOINTS.path(namespace, waitpoint))
    except ApiError as exc:
        if exc.not_found:
            return (
                rules.Refusal.WAITPOINT_NOT_FOUND,
                f"waitpoint {waitpoint!r} does not exist in namespace {namespace!r}",
                404,
            )
        raise
    return await _judged(api, keys, default_algorithm, body, userinfo, wp, permits)


async def _judged(
    api: KubeApi,
    keys: TokenKeys,
    default_algorithm: str,
    body: Mapping[str, Any],
    userinfo: kopf.UserInfo,
    wp: Body,
    permits: Permits | None = None,
) -> tuple[rules.Refusal, str, int] | None:
    """The judgement against waitpoint `wp`: None to admit, else the refusal."""
    spec = body.get("spec") or {}
    try:
        signal = SignalSpec.model_validate(spec)
        status = WaitpointStatus.model_validate(wp.get("status") or {})
    except ValidationError as exc:
        return rules.Refusal.INVALID_PROOF, f"unreadable signal or waitpoint: {exc}", 400
    annotations = body["metadata"].get("annotations") or {}
    claimed_groups = annotations.get(ANNOTATION_SENDER_GROUPS)
    groups = tuple(userinfo.get("groups") or ())
    # Judged with the groups the controller will see: none unless the Signal records them.
    sender = approvals.Sender(
        str(userinfo.get("username", "")), groups if claimed_groups is not None else ()
    )
    verdict = await judge(
        api,
        keys,
        wp,
        status,
        Candidate(
            spec=signal,
            sender=sender,
            claimed_sender=str(annotations.get(ANNOTATION_SENDER, "")),
            claimed_groups=claimed_groups,
            uid=userinfo.get("uid"),
            extra=dict(cast(Mapping[str, Any], userinfo.get("extra") or {})),
            signal_uid=str(body["metadata"].get("uid") or "") or None,
            admitting=True,
        ),
        default_algorithm=default_algorithm,
        permits=permits,
    )
    if verdict is None:
        return None
    return verdict[0], verdict[1], 403


def register_approval_admission(
    registry: kopf.OperatorRegistry, api: KubeApi, keys: TokenKeys, default_algorithm: str
) -> tuple[Any, ...]:
    """The WorkOrder creator webhooks and the Signal sender's immutability (the Signal
    creation webhook is registered in admission.py)."""

    @kopf.on.mutate(
        "workgate.io",
        "v1alpha1",
        "workorders",
        id="workorders-created-by",
        operations=["CREATE"],
        persistent=True,
        registry=registry,
    )
    async def record_creator(userinfo: kopf.UserInfo, patch: kopf.Patch, **_: Any) -> None:
        stamp_creator("CREATE", None, userinfo, patch)

    # Updates only restore the record. failurePolicy Ignore: while the operator is down,
    # WorkOrders stay editable; a record changed then no longer matters to gates, whose
    # waitpoints copied their author when they were created (status.author).
    @kopf.on.mutate(
        "workgate.io",
        "v1alpha1",
        "workorders",
        id="workorders-created-by-kept",
        operations=["UPDATE"],
        persistent=True,
        ignore_failures=True,
        registry=registry,
    )
    async def keep_creator(userinfo: kopf.UserInfo, patch: kopf.Patch, **kwargs: Any) -> None:
        stamp_creator("UPDATE", kwargs.get("old"), userinfo, patch)

    # The proof binds the sender's name but not their groups: an update that changed the
    # recorded groups before the operator judged would widen what the sender may decide.
    @kopf.on.validate(
        "workgate.io",
        "v1alpha1",
        "signals",
        id="signals-sender-kept",
        operations=["UPDATE"],
        persistent=True,
        registry=registry,
    )
    async def keep_sender(body: kopf.Body, **kwargs: Any) -> None:
        message = sender_changed(kwargs.get("old"), body)
        if message is not None:
            raise kopf.AdmissionError(f"{rules.Refusal.SENDER_MISMATCH}: {message}", code=403)

    return record_creator, keep_creator, keep_sender
