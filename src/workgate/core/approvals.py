"""Who may decide a waitpoint, and whether it has been decided: pure rules.

A signal's sender is the identity the API server authenticated, recorded on the Signal at
admission (annotations workgate.io/sender and workgate.io/sender-groups). Whether the
sender holds the RBAC verb `approve` is the API server's answer (a SubjectAccessReview the
shell asks); everything else about deciding lives here:

- `approvers` narrows who may decide (RBAC subjects: User, Group, ServiceAccount);
- `forbidSelfApproval` refuses the WorkOrder's author;
- a sender counts once per signal name, and no name takes more approvals than it needs,
  so what a waitpoint records is bounded by its own spec whatever arrives;
- one signal named `rejectSignalName` rejects the waitpoint.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from workgate.api.waitpoint import ApprovalRules, Subject, SubjectKind, Tally
from workgate.core.signals import Refusal

ANY_NAME = "*"  # the tally of a wildcard waitpoint: any signal name counts
MAX_WAITING_FOR = 1024
# An in-process admission policy takes effect shortly after its binding is created; objects
# created in this window are not trusted to carry admission-recorded identities.
POLICY_SETTLE = timedelta(seconds=5)


@dataclass(frozen=True)
class Sender:
    """An authenticated identity: user name and groups, as the API server saw them."""

    user: str
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Vote:
    """An accepted signal: its name and its verified sender."""

    name: str
    sender: str


def parse_groups(text: str | None) -> tuple[str, ...]:
    """The sender-groups annotation: group names separated by commas."""
    return tuple(g.strip() for g in (text or "").split(",") if g.strip())


def format_groups(groups: Iterable[str]) -> str:
    return ",".join(groups)


def same_groups(claimed: str | None, actual: Iterable[str]) -> bool:
    return set(parse_groups(claimed)) == {g for g in actual if g}


def service_account_user(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


def subject_matches(subject: Subject, sender: Sender, namespace: str) -> bool:
    if subject.kind == SubjectKind.USER:
        return sender.user == subject.name
    if subject.kind == SubjectKind.GROUP:
        return subject.name in sender.groups
    return sender.user == service_account_user(subject.namespace or namespace, subject.name)


def describe_subjects(subjects: Sequence[Subject]) -> str:
    return ", ".join(
        f"{s.kind} {s.namespace + '/' if s.namespace else ''}{s.name}" for s in subjects
    )


def rules_key(rules: ApprovalRules | dict[str, Any]) -> str:
    """A canonical form of the decision rules, to compare a gate with its waitpoint."""
    model = ApprovalRules.model_validate(
        rules.model_dump(by_alias=True) if isinstance(rules, ApprovalRules) else rules
    )
    wire = model.to_wire()
    wire["approvers"] = sorted(
        wire.get("approvers", []), key=lambda s: json.dumps(s, sort_keys=True)
    )
    return json.dumps(wire, sort_keys=True, separators=(",", ":"))


def _tally_names(required_signal_names: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(required_signal_names)) or [ANY_NAME]


def _counts_for(name: str, vote: Vote, reject: str) -> bool:
    return vote.name != reject and (name == ANY_NAME or vote.name == name)


def tally(
    rules: ApprovalRules, required_signal_names: Sequence[str], votes: Sequence[Vote]
) -> list[Tally]:
    """Per required name (or `*`): distinct senders counted, and how many more are needed."""
    tallies = []
    for name in _tally_names(required_signal_names):
        senders = list(
            dict.fromkeys(v.sender for v in votes if _counts_for(name, v, rules.reject_signal_name))
        )
        counted = senders[: rules.required_approvals]
        tallies.append(
            Tally(
                name=name,
                required=rules.required_approvals,
                approved_by=counted,
                remaining=rules.required_approvals - len(counted),
            )
        )
    return tallies


def rejection(rules: ApprovalRules, votes: Sequence[Vote]) -> Vote | None:
    return next((v for v in votes if v.name == rules.reject_signal_name), None)


def is_approved(tallies: Sequence[Tally]) -> bool:
    return all(t.remaining == 0 for t in tallies)


def waiting_for(rules: ApprovalRules, tallies: Sequence[Tally]) -> str:
    """`approve: 1 more (approved: alice); qa: 1 more; from Group release`."""
    parts = []
    for t in tallies:
        if t.remaining == 0:
            continue
        label = "any signal" if t.name == ANY_NAME else t.name
        approved = f" (approved: {', '.join(t.approved_by)})" if t.approved_by else ""
        parts.append(f"{label}: {t.remaining} more{approved}")
    text = "; ".join(parts)
    if text and rules.approvers:
        text += f"; from {describe_subjects(rules.approvers)}"
    if text and rules.forbid_self_approval:
        text += "; not the author"
    return text if len(text) <= MAX_WAITING_FOR else text[: MAX_WAITING_FOR - 3] + "..."


def judge_sender(
    rules: ApprovalRules,
    *,
    namespace: str,
    waitpoint: str,
    required_signal_names: Sequence[str],
    sender: Sender,
    author: str | None,
    signal_name: str,
    votes: Sequence[Vote],
) -> tuple[Refusal, str] | None:
    """None if `sender` may decide with this signal now (RBAC aside), else why not."""
    if not sender.user:
        return Refusal.SENDER_UNVERIFIED, "the signal carries no verified sender"
    if rules.approvers and not any(subject_matches(s, sender, namespace) for s in rules.approvers):
        return (
            Refusal.NOT_AN_APPROVER,
            f"{sender.user} is not among the approvers of waitpoint {waitpoint} "
            f"({describe_subjects(rules.approvers)})",
        )
    if rules.forbid_self_approval:
        if author is None:
            return (
                Refusal.AUTHOR_UNKNOWN,
                f"waitpoint {waitpoint} forbids self-approval but the WorkOrder's creator was "
                "not recorded at admission, so it cannot be ruled out",
            )
        if author == sender.user:
            return (
                Refusal.SELF_APPROVAL,
                f"{sender.user} created the WorkOrder and waitpoint {waitpoint} forbids "
                "self-approval (separation of duties): someone else must decide",
            )
    rejected = rejection(rules, votes)
    if rejected is not None:
        return Refusal.ALREADY_REJECTED, f"waitpoint {waitpoint} was rejected by {rejected.sender}"
    if signal_name == rules.reject_signal_name:
        return None
    for t in tally(rules, required_signal_names, votes):
        if not _counts_for(t.name, Vote(signal_name, sender.user), rules.reject_signal_name):
            continue
        label = "any signal" if t.name == ANY_NAME else t.name
        if sender.user in t.approved_by:
            return (
                Refusal.ALREADY_COUNTED,
                f"{sender.user} already counts for {label} on waitpoint {waitpoint}; a sender "
                "counts once",
            )
        if t.remaining == 0:
            return (
                Refusal.ALREADY_SATISFIED,
                f"{label} already has the {t.required} approval(s) waitpoint {waitpoint} needs",
            )
    return None


def identity_trusted(
    *, webhook: bool, created: datetime | None, policy_bound_at: datetime | None
) -> bool:
    """May an identity annotation on an object created at `created` be believed?

    With workgate's webhook on, its admission checks (persistent, failurePolicy Fail) stand
    behind every annotation. With it off, only the API server's own admission policy can,
    and only for objects created after that policy took effect.
    """
    if webhook:
        return True
    if policy_bound_at is None or created is None:
        return False
    return created >= policy_bound_at + POLICY_SETTLE
