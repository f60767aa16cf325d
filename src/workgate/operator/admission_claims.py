"""Admission for claim Leases: a claim is made, renewed, reported on and released only by
the identity that holds it (or the operator), and made only by one allowed to claim
that work type.

The webhook sees only Leases labelled `app.kubernetes.io/managed-by=workgate` (its
objectSelector, which the API server matches against the old and the new object, so
removing the label is seen too); no other Lease in the cluster is ever sent here.
"""

from __future__ import annotations

from typing import Any

import kopf

from workgate.api.wire import (
    GROUP,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    current_attempt_of,
    recorded_phase,
)
from workgate.core import claims as rules
from workgate.core.claims import ClaimTarget, LeaseView
from workgate.core.naming import lease_name
from workgate.k8s.api import WORKORDERS, ApiError, KubeApi
from workgate.k8s.authz import allowed
from workgate.k8s.owners import controller_of, workgate_owner
from workgate.operator.config import OperatorConfig

CLAIMS_WEBHOOK_ID = "claims"


def register_claim_admission(
    registry: kopf.OperatorRegistry, api: KubeApi, config: OperatorConfig
) -> None:
    @kopf.on.validate(
        "coordination.k8s.io",
        "v1",
        "leases",
        id=CLAIMS_WEBHOOK_ID,
        operations=["CREATE", "UPDATE", "DELETE"],
        labels={LABEL_MANAGED_BY: MANAGED_BY},
        persistent=True,
        registry=registry,
    )
    async def validate_claim(body: kopf.Body, userinfo: kopf.UserInfo, **kwargs: Any) -> None:
        old, new = kwargs.get("old"), kwargs.get("new")
        operation = str(kwargs.get("operation", ""))
        requester = str(userinfo.get("username", ""))
        groups = tuple(userinfo.get("groups") or ())
        operator = config.claimant or config.identity
        if operation == "DELETE" and old is not None:
            refusal = rules.judge_claim_delete(
                LeaseView.from_body(dict(old)), requester, groups, operator
            )
        elif operation == "UPDATE" and old is not None and new is not None:
            refusal = rules.judge_claim_update(
                LeaseView.from_body(dict(old)),
                LeaseView.from_body(dict(new)),
                requester,
                operator,
                same_owner=controller_of(dict(old)) == controller_of(dict(new)),
            )
        elif operation == "CREATE":
            refusal = await _judge_create(api, config, dict(body), requester, operator, userinfo)
        else:
            refusal = None
        if refusal is not None:
            raise kopf.AdmissionError(f"claim refused: {refusal}", code=403)


async def _judge_create(
    api: KubeApi,
    config: OperatorConfig,
    body: dict[str, Any],
    requester: str,
    operator: str,
    userinfo: kopf.UserInfo,
) -> str | None:
    namespace = str(body["metadata"].get("namespace", ""))
    owner = workgate_owner(body)
    target: ClaimTarget | None = None
    may_claim = False
    if owner is not None:
        name, uid = owner
        try:
            wo = await api.get(WORKORDERS.path(namespace, name))
        except ApiError as exc:
            if not exc.not_found:
                raise
            wo = None
        spec = (wo or {}).get("spec") or {}
        work_type = str(spec.get("workType", ""))
        target = ClaimTarget(
            exists=wo is not None,
            uid_matches=wo is not None and wo["metadata"]["uid"] == uid,
            lease_name=lease_name(name),
            work_type=work_type,
            local=work_type in config.local_work_types,
            phase=recorded_phase((wo or {}).get("status")) or "",
            suspended=bool(spec.get("suspend")),
            cancelled=bool(spec.get("cancel")),
            limited=work_type in dict(config.concurrency_limits),
            attempt=current_attempt_of((wo or {}).get("status")) if wo is not None else None,
        )
        if wo is not None and requester != operator and not target.local:
            may_claim = await allowed(
                api, userinfo, "claim", GROUP, "worktypes", namespace, name=work_type
            )
    return rules.judge_claim_create(
        str(body["metadata"].get("name", "")),
        LeaseView.from_body(body),
        requester,
        operator,
        target,
        may_claim,
    )
