"""Judge one signal against its waitpoint: the one sequence admission and the controller share.

Admission judges with the requesting user as the API server authenticated them; the
controller judges with the identity admission recorded on the Signal, once it has decided
that record can be believed (`core.approvals.identity_trusted`). Either way the order is:
the token proof and nonce (core.signals), then who may decide (core.approvals), then the
RBAC verb `approve` (a SubjectAccessReview), so cheap refusals cost no API call.

The controller asks RBAC again only when it has to: a Signal this very process admitted a
moment ago, with the same sender, was allowed `approve` on that waitpoint by the
SubjectAccessReview admission made (`Permits`). The record is keyed by the Signal's uid,
which the API server assigns before validating admission and nobody can choose, and it
lives only in this process's memory, so no Signal can claim it: a Signal admitted by
another replica, by an earlier run of the operator, or longer ago than `PERMIT_SECONDS`
gets a SubjectAccessReview of its own, as before.

Also here: who a Signal's sender is, the order a waitpoint's Signals are judged in, and the
Events a round of verdicts makes.
"""

from __future__ import annotations

import time
from collections import OrderedDict, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from workgate.api.waitpoint import SignalPhase, SignalSpec, WaitpointSpec, WaitpointStatus
from workgate.core import approvals
from workgate.core import signals as rules
from workgate.k8s import authz
from workgate.k8s.api import Body, KubeApi
from workgate.k8s.tokenkeys import TokenKeys
from workgate.k8s.waitpoints import ANNOTATION_SENDER, ANNOTATION_SENDER_GROUPS

Verdict = tuple[rules.Refusal, str] | None
Judged = tuple[str, SignalPhase, str, str]  # (Signal name, phase, reason, message)
# How long an admission's `approve` verdict stands in for the controller's own review. An
# RBAC change within this window after a Signal's admission may not be seen by its
# judgement (Kubernetes' webhook authorizer caches allowed verdicts for 5 minutes).
PERMIT_SECONDS = 30.0
PERMIT_ENTRIES = 8192
PermitKey = tuple[str, str, str, str, tuple[str, ...]]


class Permits:
    """`approve` verdicts this process's admission got from RBAC for the Signals it
    admitted: (Signal uid, namespace, waitpoint, user, groups) -> when. Bounded in age
    and number; each is used at most once."""

    def __init__(self, seconds: float = PERMIT_SECONDS, entries: int = PERMIT_ENTRIES) -> None:
        self.seconds = seconds
        self.entries = entries
        self._granted: OrderedDict[PermitKey, float] = OrderedDict()
        self.reused = 0  # reviews the controller did not need to ask for

    @staticmethod
    def key(signal_uid: str, namespace: str, waitpoint: str, sender: approvals.Sender) -> PermitKey:
        return (signal_uid, namespace, waitpoint, sender.user, tuple(sorted(set(sender.groups))))

    def grant(self, key: PermitKey) -> None:
        self._granted[key] = time.monotonic()
        self._granted.move_to_end(key)
        while len(self._granted) > self.entries:
            self._granted.popitem(last=False)

    def take(self, key: PermitKey) -> bool:
        """Was this very Signal, from this very sender, allowed at admission, recently?"""
        granted = self._granted.pop(key, None)
        fresh = granted is not None and time.monotonic() - granted <= self.seconds
        self.reused += fresh
        return fresh

    def __len__(self) -> int:
        return len(self._granted)


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
    # The Signal's uid (assigned by the API server) and what to do with `Permits`:
    # admission grants one when RBAC allows, the controller takes one instead of asking.
    signal_uid: str | None = None
    admitting: bool = False


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
    permits: Permits | None = None,
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
    permit = None
    if permits is not None and candidate.signal_uid:
        permit = Permits.key(candidate.signal_uid, namespace, name, candidate.sender)
        if not candidate.admitting and permits.take(permit):
            return None  # this process's admission asked RBAC about this very Signal
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
    if permits is not None and permit is not None and candidate.admitting:
        permits.grant(permit)
    return None


def sender_of(signal: Body) -> approvals.Sender:
    """Who admission recorded as a Signal's sender (believed only once trusted)."""
    annotations = signal["metadata"].get("annotations") or {}
    return approvals.Sender(
        str(annotations.get(ANNOTATION_SENDER, "")),
        approvals.parse_groups(annotations.get(ANNOTATION_SENDER_GROUPS)),
    )


def arrival(signal: Body) -> tuple[str, str]:
    """Signals are judged in order of arrival (creation, then name)."""
    meta = signal["metadata"]
    return str(meta.get("creationTimestamp", "")), str(meta["name"])


def summarize(judged: list[Judged]) -> list[tuple[str, str, str]]:
    """One Event per accepted signal, one per refusal reason in a round (a flood of refused
    signals costs one Event, not one each)."""
    events: list[tuple[str, str, str]] = []
    refused: dict[str, list[Judged]] = defaultdict(list)
    for one in judged:
        signal_name, phase, reason, message = one
        if phase == SignalPhase.ACCEPTED:
            events.append(("Normal", "SignalAccepted", f"signal {signal_name}: {message}"))
        else:
            refused[reason].append(one)
    for reason, group in refused.items():
        first = f"signal {group[0][0]}: {group[0][3]}"
        more = f" (and {len(group) - 1} more)" if len(group) > 1 else ""
        events.append(("Warning", "SignalRejected", f"{reason}: {first}{more}"))
    return events
