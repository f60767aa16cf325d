"""Validating admission: refuse bad Signals and WorkOrders at `kubectl apply`.

Signals: the proof must match the waitpoint's token for this very content and sender,
the nonce must be fresh, the waitpoint open, and the sender allowed to decide it (see
approval_admission.py, which also records who created each WorkOrder). WorkOrders: the
embedded YAML must parse and pass the allowlist, and its author must be allowed to create
every embedded object (a SubjectAccessReview as the requesting user), so a WorkOrder never
lets anyone make the operator create what they could not create themselves. The
reconcilers check again; admission just makes the error immediate and clear.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

import kopf

from workgate.api.common import GROUP, VERSION
from workgate.api.waitpoint import WaitpointStage
from workgate.api.wire import current_attempt_of, now_utc
from workgate.core.claims import LeaseView
from workgate.core.manifests import ManifestError, parse_documents, validate_objects
from workgate.core.naming import lease_name
from workgate.k8s.api import (
    LEASES,
    WORKORDERS,
    ApiError,
    Body,
    KubeApi,
)
from workgate.k8s.authz import allowed
from workgate.k8s.owners import controlled_by
from workgate.k8s.tokenkeys import TokenKeys
from workgate.k8s.waitpoints import ANNOTATION_RECIPIENT_KEY
from workgate.operator.approval_admission import admit_signal, register_approval_admission
from workgate.operator.config import OperatorConfig
from workgate.operator.judging import Permits
from workgate.operator.metrics import OperatorMetrics


def register_admission(
    registry: kopf.OperatorRegistry,
    api: KubeApi,
    config: OperatorConfig,
    keys: TokenKeys,
    metrics: OperatorMetrics,
    waitpoints: Callable[[tuple[str, str]], Body | None] = lambda _: None,
    permits: Permits | None = None,
) -> None:
    """`waitpoints`: the operator's cache of Waitpoints, by (namespace, name); `permits`:
    where the RBAC verdicts of admitted Signals are left for this process's controller."""

    @kopf.on.validate(
        GROUP,
        VERSION,
        "signals",
        id="signals",
        operations=["CREATE"],
        persistent=True,
        registry=registry,
    )
    async def validate_signal(body: kopf.Body, userinfo: kopf.UserInfo, **_: Any) -> None:
        key = (body["metadata"].get("namespace", ""), str(body["spec"].get("waitpointName", "")))
        refusal = await admit_signal(
            api,
            keys,
            config.token_algorithm,
            body,
            userinfo,
            cached=waitpoints(key),
            permits=permits,
        )
        if refusal is not None:
            reason, message, code = refusal
            metrics.record_signal(False, reason)
            raise kopf.AdmissionError(f"{reason}: {message}", code=code)

    register_approval_admission(registry, api, keys, config.token_algorithm)

    @kopf.on.validate(
        GROUP,
        VERSION,
        "waitpoints",
        id="waitpoints",
        operations=["CREATE"],
        persistent=True,
        registry=registry,
    )
    async def validate_waitpoint(body: kopf.Body, userinfo: kopf.UserInfo, **_: Any) -> None:
        spec = body.get("spec") or {}
        if spec.get("stage") != WaitpointStage.DYNAMIC:
            return
        recipient = (body["metadata"].get("annotations") or {}).get(ANNOTATION_RECIPIENT_KEY, "")
        try:
            valid_key = len(base64.b64decode(recipient, validate=True)) == 32
        except (ValueError, binascii.Error):
            valid_key = False
        if not valid_key:
            raise kopf.AdmissionError(
                f"metadata.annotations[{ANNOTATION_RECIPIENT_KEY}] must be the suspending "
                "claimant's X25519 public key (base64, 32 bytes): the token is sealed to it",
                code=400,
            )
        namespace = body["metadata"].get("namespace", "")
        try:
            wo = await api.get(WORKORDERS.path(namespace, str(spec.get("workOrderName", ""))))
        except ApiError as exc:
            if exc.not_found:
                raise kopf.AdmissionError(
                    "spec.workOrderName: no such WorkOrder", code=404
                ) from None
            raise
        if not await _claim_held(api, namespace, wo, str(userinfo.get("username", ""))):
            raise kopf.AdmissionError(
                "only the claimant holding the WorkOrder's current attempt can suspend it",
                code=403,
            )

    @kopf.on.validate(
        GROUP,
        VERSION,
        "workorders",
        id="workorders",
        operations=["CREATE"],
        persistent=True,
        registry=registry,
    )
    async def validate_workorder(body: kopf.Body, userinfo: kopf.UserInfo, **_: Any) -> None:
        spec = body.get("spec") or {}
        if spec.get("workType") not in config.local_work_types:
            return  # agents interpret other work types; nothing is applied from them
        namespace = body["metadata"].get("namespace", "")
        try:
            objects = validate_objects(
                parse_documents(str(spec.get("yamlContent", ""))),
                namespace=namespace,
                allowed_kinds=config.allowed_kinds,
            )
        except ManifestError as exc:
            raise kopf.AdmissionError(
                f"spec.yamlContent: {exc.reason}: {exc.message}", code=400
            ) from None
        for obj in objects:
            try:
                resource = await api.resource_for(obj.api_version, obj.kind)
            except ApiError:
                raise kopf.AdmissionError(
                    f"spec.yamlContent: {obj.kind} ({obj.api_version}) is not served here",
                    code=400,
                ) from None
            for verb in ("create", "patch"):
                if not await allowed(
                    api, userinfo, verb, resource.group, resource.plural, namespace
                ):
                    raise kopf.AdmissionError(
                        f"spec.yamlContent: {userinfo.get('username')} may not {verb} "
                        f"{resource.plural}.{resource.group} in namespace {namespace}, so a "
                        "WorkOrder cannot do it for them",
                        code=403,
                    )


async def _claim_held(api: KubeApi, namespace: str, workorder: Body, requester: str) -> bool:
    """Does `requester` hold the WorkOrder's current attempt? The Lease is the claim (status
    may not record it yet when a claimant suspends right after claiming), and only its
    holder may suspend: anyone else would receive the waitpoint's token sealed to a key
    of their own choosing."""
    try:
        lease = await api.get(LEASES.path(namespace, lease_name(workorder["metadata"]["name"])))
    except ApiError as exc:
        if exc.not_found:
            return False
        raise
    view = LeaseView.from_body(lease)
    attempt = current_attempt_of(workorder.get("status"))
    return (
        controlled_by(lease, workorder["metadata"]["uid"])
        and view.attempt == attempt
        and view.outcome is None
        and view.revoked is None
        and not view.is_stale(now_utc())
        and view.holder == requester
    )
