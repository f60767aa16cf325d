"""Claims: what a WorkOrder's Lease says, and when it goes stale.

The Lease is the only record of who holds an attempt. Agents report an attempt's outcome
on the Lease they hold (annotations below), so the operator stays the sole writer of a
WorkOrder's status and a zombie claimant, whose resourceVersion is stale, cannot report.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from workgate.api.wire import GROUP, parse_time

ANNOTATION_ATTEMPT = f"{GROUP}/attempt"
ANNOTATION_RESULT = f"{GROUP}/result"
ANNOTATION_ERROR = f"{GROUP}/error"
ANNOTATION_ERROR_REASON = f"{GROUP}/error-reason"
ANNOTATION_WAITPOINT = f"{GROUP}/waitpoint"
ANNOTATION_INSTANCE = f"{GROUP}/claimant-instance"  # which process of the holder
ANNOTATION_EXIT_CODE = f"{GROUP}/exit-code"  # an agent command's exit status, with Failed
# Set by the operator only: the attempt is over (cancelled, past its deadline). The holder
# stops its work, reports nothing and releases the Lease; until it has, or until the Lease
# goes stale (fencing stops the work before that), no next attempt can be claimed.
ANNOTATION_REVOKED = f"{GROUP}/revoked"
MAX_INSTANCE = 63  # an instance name is display text the claimant chose: bounded


class Outcome(StrEnum):
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"  # the claimant waits at a waitpoint it created (dynamic suspension)


@dataclass(frozen=True)
class LeaseView:
    name: str
    holder: str | None
    attempt: int | None
    acquire_time: datetime | None
    renew_time: datetime | None
    duration_seconds: int
    resource_version: str
    uid: str
    outcome: Outcome | None = None
    error: str | None = None
    error_reason: str | None = None
    waitpoint_key: str | None = None
    instance: str | None = None  # which process of the holder (claimant-written, display only)
    exit_code: int | None = None
    revoked: str | None = None  # why the operator ended this claim (a reason), if it did

    @property
    def claimant(self) -> str:
        """The verified holder, with the process it named for itself when it did."""
        holder = self.holder or "unknown"
        return f"{holder} ({self.instance})" if self.instance else holder

    @property
    def expires_at(self) -> datetime | None:
        last = self.renew_time or self.acquire_time
        return last + timedelta(seconds=self.duration_seconds) if last else None

    def is_stale(self, now: datetime) -> bool:
        expires = self.expires_at
        return expires is None or now >= expires

    def is_live(self, now: datetime) -> bool:
        """Its holder may still be working: no outcome reported, not revoked, not stale."""
        return self.outcome is None and self.revoked is None and not self.is_stale(now)

    def is_claim_of(self, claim: LeaseView, holder: str) -> bool:
        """Still `claim` (the same Lease and attempt), held by `holder`: a claimant's own."""
        return self.uid == claim.uid and self.holder == holder and self.attempt == claim.attempt

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> LeaseView:
        meta = body.get("metadata", {})
        annotations = meta.get("annotations") or {}
        spec = body.get("spec") or {}
        try:
            attempt: int | None = int(annotations.get(ANNOTATION_ATTEMPT, ""))
        except ValueError:
            attempt = None
        try:
            exit_code: int | None = int(annotations.get(ANNOTATION_EXIT_CODE, ""))
        except ValueError:
            exit_code = None
        raw_outcome = str(annotations.get(ANNOTATION_RESULT, ""))
        outcome = Outcome(raw_outcome) if raw_outcome in set(Outcome) else None
        return cls(
            name=meta.get("name", ""),
            holder=spec.get("holderIdentity"),
            attempt=attempt,
            acquire_time=parse_time(spec.get("acquireTime")),
            renew_time=parse_time(spec.get("renewTime")),
            duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
            resource_version=meta.get("resourceVersion", ""),
            uid=meta.get("uid", ""),
            outcome=outcome,
            error=annotations.get(ANNOTATION_ERROR),
            error_reason=annotations.get(ANNOTATION_ERROR_REASON),
            waitpoint_key=annotations.get(ANNOTATION_WAITPOINT),
            instance=str(annotations.get(ANNOTATION_INSTANCE) or "")[:MAX_INSTANCE] or None,
            exit_code=exit_code,
            revoked=str(annotations.get(ANNOTATION_REVOKED) or "")[:128] or None,
        )


def micro_time(value: datetime) -> str:
    """A Lease MicroTime: RFC 3339 with exactly six fractional digits, UTC."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def renewal_due(lease: LeaseView, now: datetime, fraction: float = 1 / 3) -> datetime | None:
    """When a holder should renew: after `fraction` of the duration has passed."""
    last = lease.renew_time or lease.acquire_time
    if last is None:
        return now
    return last + timedelta(seconds=lease.duration_seconds * fraction)


@dataclass(frozen=True)
class Fencing:
    """When a claimant renews, and when it must have stopped its work.

    As in client-go's leader election, the renew deadline is shorter than the lease
    duration: a holder that has not renewed within `renew_deadline` of its last success
    stops its work (terminate, then kill after `grace`), and the kill lands before the
    Lease can go stale, so no one else can claim the attempt while its work still runs.
    All spans are measured from when the last successful renewal was *sent*.
    """

    renew_every: float
    renew_deadline: float
    grace: float

    @classmethod
    def for_duration(cls, duration_seconds: float, max_grace: float = 30.0) -> Fencing:
        renew_deadline = duration_seconds * 2 / 3
        grace = min(max_grace, duration_seconds / 6)
        return cls(renew_every=duration_seconds / 3, renew_deadline=renew_deadline, grace=grace)


# --- who may write a claim Lease (the admission webhook's rules) -----------------------

# Identities that delete objects on the cluster's behalf: the garbage collector removes a
# deleted WorkOrder's Lease, the namespace controller a deleted namespace's.
SYSTEM_DELETERS = frozenset(
    {
        "system:kube-controller-manager",
        "system:serviceaccount:kube-system:generic-garbage-collector",
        "system:serviceaccount:kube-system:namespace-controller",
    }
)
SYSTEM_MASTERS = "system:masters"


@dataclass(frozen=True)
class ClaimTarget:
    """The WorkOrder a new claim Lease names as its controller, as the API server has it."""

    exists: bool
    uid_matches: bool
    lease_name: str  # the claim Lease name this WorkOrder's claims must use
    work_type: str
    local: bool  # the operator itself runs this work type
    phase: str = ""
    suspended: bool = False
    cancelled: bool = False
    limited: bool = False  # its work type has a concurrency limit
    attempt: int | None = None  # its current attempt, as its stored status says


def judge_claim_create(
    lease_name: str,
    lease: LeaseView,
    requester: str,
    operator: str,
    target: ClaimTarget | None,
    may_claim: bool,
) -> str | None:
    """Why creating this claim Lease is refused, or None. `target` is None when the Lease
    has no WorkOrder controller; `may_claim` is the requester's RBAC answer for verb
    `claim` on `worktypes/<work type>`."""
    if target is None:
        return "a claim Lease must have its WorkOrder as controller owner reference"
    if not target.exists or not target.uid_matches:
        return "the WorkOrder this claim names does not exist (or is not that uid)"
    if lease_name != target.lease_name:
        return f"the claim Lease of this WorkOrder is named {target.lease_name}"
    if lease.holder != requester:
        return (
            f"spec.holderIdentity must be the claimant's own user name {requester!r}, "
            f"not {lease.holder!r}"
        )
    if lease.attempt is None:
        return f"metadata.annotations[{ANNOTATION_ATTEMPT}] must be the attempt number"
    if lease.outcome is not None:
        return "a new claim cannot carry an outcome"
    if lease.revoked is not None:
        return f"a new claim cannot be {ANNOTATION_REVOKED}"
    if requester == operator:
        return None
    if target.local:
        return f"{target.work_type!r} work is run by the operator; agents cannot claim it"
    if not may_claim:
        return (
            f"{requester} may not claim {target.work_type!r} work (needs verb 'claim' on "
            f"worktypes.{GROUP}/{target.work_type})"
        )
    if target.cancelled:
        return "the WorkOrder is cancelled (spec.cancel)"
    if target.suspended:
        return "the WorkOrder is suspended (spec.suspend): it is not claimed until resumed"
    if target.attempt is not None and lease.attempt != target.attempt:
        return (
            f"the WorkOrder is on attempt {target.attempt}, not {lease.attempt}: "
            "a claim is for its current attempt"
        )
    if target.limited and target.phase != "PENDING":
        return (
            f"{target.work_type!r} work has a concurrency limit: a WorkOrder is claimed "
            f"only once the operator admitted it (PENDING), not while {target.phase or 'new'}"
        )
    return None


def judge_claim_update(
    old: LeaseView, new: LeaseView, requester: str, operator: str, same_owner: bool
) -> str | None:
    """Only the holder (renewing, reporting) or the operator may change a claim, and
    never who holds it, which attempt it is for, or whose it is."""
    if requester not in (old.holder, operator):
        return f"only the claim's holder {old.holder!r} (or the operator) may change it"
    if requester != operator and new.revoked != old.revoked:
        return f"only the operator may set {ANNOTATION_REVOKED}"
    if requester != operator and old.revoked is not None:
        return f"the claim was revoked ({old.revoked}): stop the work and release the Lease"
    if new.holder != old.holder:
        return "a claim's holderIdentity cannot change: release it and claim anew"
    if new.attempt != old.attempt:
        return f"a claim's {ANNOTATION_ATTEMPT} annotation cannot change"
    if not same_owner:
        return "a claim's owner reference cannot change"
    if old.outcome is not None and new.outcome != old.outcome:
        return "a claim's reported outcome cannot change"
    return None


def judge_claim_delete(
    old: LeaseView, requester: str, groups: tuple[str, ...], operator: str
) -> str | None:
    if requester in (old.holder, operator) or requester in SYSTEM_DELETERS:
        return None
    if SYSTEM_MASTERS in groups:
        return None
    return f"only the claim's holder {old.holder!r} (or the operator) may release it"
