"""Judge one signal against its waitpoint: the one sequence admission and the controller share.

Admission judges with the requesting user as the API server authenticated them; the
controller judges with the identity admission recorded on the Signal, once it has decided
that record can be believed (`core.approvals.identity_trusted`). Either way the order is:
the token proof and nonce (core.signals), then who may decide (core.approvals), then the
RBAC verb `approve` (a SubjectAccessReview), so cheap refusals cost no API call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from workgate.api.waitpoint import SignalSpec, WaitpointSpec, WaitpointStatus
from workgate.core import approvals
from workgate.core import signals as rules
from workgate.k8s import authz
from workgate.k8s.api import Body, KubeApi
from workgate.k8s.tokenkeys import TokenKeys

Verdict = tuple[rules.Refusal, str] | None


@dataclass(frozen=True)
class Candidate:
    """A signal to judge, and who sent it."""

    spec: SignalSpec
    sender: approvals.Sender
    claimed_sender: str | None = None  # what the Signal's annotations say (admission only)
    claimed_groups: str | None = None
    uid: str | None = None  # for the SubjectAccessReview, when admission knows them
    extra: Mapping[str, Any] = field(default_factory=dict)
    verified: bool = True  # False: the recorded sender cannot be believed (see trust model)


def votes_of(status: WaitpointStatus) -> list[approvals.Vote]:
    return [approvals.Vote(r.name, r.sender) for r in status.received_signals]


async def judge(
    api: KubeApi,
    keys: TokenKeys,
    waitpoint: Body,
    status: WaitpointStatus,
    candidate: Candidate,
    *,
    default_algorithm: str,
) -> Verdict:
    """None if the signal may be accepted now, else the refusal and a clear message."""
    meta = waitpoint["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    spec = WaitpointSpec.model_validate(waitpoint["spec"])
    if status.state is None:
        return rules.Refusal.NOT_READY, f"waitpoint {name} has no token yet; retry shortly"
    token = await keys.token(
        meta, status.token_key_id or "", status.token_algorithm or default_algorithm
    )
    if token is None:
        return (
            rules.Refusal.INVALID_PROOF,
            f"the operator key {status.token_key_id!r} that minted waitpoint {name}'s token "
            "is gone (pruned), so no proof can match",
        )
    sig = candidate.spec
    refusal = rules.judge_signal(
        rules.SignalCheck(
            namespace=namespace,
            waitpoint=name,
            waitpoint_state=status.state,
            required_signal_names=spec.required_signal_names,
            reject_signal_name=spec.reject_signal_name,
            used_nonces=[r.nonce for r in status.received_signals],
            token=token,
            signal_name=sig.signal_name,
            nonce=sig.nonce,
            payload=sig.payload,
            proof=sig.proof,
            sender=candidate.sender.user,
            claimed_sender=candidate.claimed_sender,
        )
    )
    if refusal is not None:
        return refusal
    if not candidate.verified:
        return (
            rules.Refusal.SENDER_UNVERIFIED,
            "the operator runs without its admission webhook and the signal's sender was not "
            "recorded by the workgate-identity admission policy (not bound, or bound after "
            "the signal was created), so it cannot be believed",
        )
    if candidate.claimed_groups is not None and not approvals.same_groups(
        candidate.claimed_groups, candidate.sender.groups
    ):
        return (
            rules.Refusal.SENDER_MISMATCH,
            "the signal's workgate.io/sender-groups annotation is not its creator's groups",
        )
    refusal = approvals.judge_sender(
        spec,
        namespace=namespace,
        waitpoint=name,
        required_signal_names=spec.required_signal_names,
        sender=candidate.sender,
        author=status.author,
        signal_name=sig.signal_name,
        votes=votes_of(status),
    )
    if refusal is not None:
        return refusal
    allowed, _ = await authz.may_approve(
        api,
        namespace=namespace,
        waitpoint=name,
        user=candidate.sender.user,
        groups=candidate.sender.groups,
        uid=candidate.uid,
        extra=candidate.extra,
    )
    if not allowed:
        return (
            rules.Refusal.NOT_PERMITTED,
            authz.refusal_message(candidate.sender.user, namespace, name),
        )
    return None
