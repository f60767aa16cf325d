"""What the WorkOrder state machine reads and returns: plain data, no rules.

`core.lifecycle.decide` takes an `Observation` and a `Policy` and returns a `Decision`:
the status to write, the actions (side effects) to perform first, the Events to post
and when to look again. The shell (operator/workorders.py) builds the one and carries
out the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from workgate.api.common import ConditionStatus
from workgate.api.waitpoint import (
    CloseReason,
    Rejection,
    TimeoutPolicy,
    WaitpointState,
)
from workgate.api.workorder import (
    Gate,
    WorkOrderSpec,
    WorkOrderStatus,
)
from workgate.core.approvals import rules_key
from workgate.core.claims import LeaseView
from workgate.core.controls import QueueView
from workgate.core.manifests import (
    DEFAULT_ALLOWED_KINDS,
    EmbeddedObject,
)

# --- inputs -------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildRunView:
    name: str
    succeeded: ConditionStatus | None
    reason: str = ""
    message: str = ""
    cancelled: bool = False  # spec.state asks Shipwright to cancel it
    uid: str = ""
    recreated: bool = False  # the second BuildRun of its attempt (see BUILD_NOT_SEEN)


@dataclass(frozen=True)
class WaitpointView:
    name: str
    key: str
    state: WaitpointState | None  # None until the operator has minted its token
    close_reason: CloseReason | None
    uid: str
    resource_version: str
    stage: str = ""
    required_signal_names: tuple[str, ...] = ()
    timeout_seconds: int | None = None
    on_timeout: str = TimeoutPolicy.FAIL
    approval_rules: str = ""  # core.approvals.rules_key of the waitpoint's decision rules
    rejection: Rejection | None = None  # who rejected it, when closed as Rejected

    def matches(self, gate: Gate) -> bool:
        """Is this the gate's waitpoint as declared (not one pre-created with a lower bar)?"""
        return (
            self.stage == str(gate.stage)
            and set(self.required_signal_names) == set(gate.required_signal_names)
            and self.timeout_seconds == gate.timeout_seconds
            and self.on_timeout == gate.on_timeout
            and self.approval_rules == rules_key(gate)
        )


# BuildRun failures a retry would only repeat: Shipwright validates a Build when its
# generation changes, and every retry applies the same Build, so a Build it refused to
# register (a missing strategy, a bad source) fails every later attempt the same way.
PERMANENT_BUILD_RUN_REASONS = frozenset({"BuildRegistrationFailed"})

# Shipwright fails a BuildRun whose Build is not yet in its cache, a race with the Build
# created a moment before (its reconciler reads the cache, and fails rather than waits).
# Such a BuildRun never ran: no TaskRun was made. It is created again, once per attempt.
BUILD_NOT_SEEN = "BuildNotFound"
# The Event an agent's claim makes when status records it (merged into the outcome's, if
# that is recorded in the same write).
CLAIMED_EVENT = "Claimed"


@dataclass(frozen=True)
class Policy:
    """Operator configuration that shapes decisions."""

    identity: str = "workgate-operator"
    local_work_types: frozenset[str] = frozenset({"build"})
    allowed_kinds: frozenset[tuple[str, str]] = DEFAULT_ALLOWED_KINDS
    backoff_cap_seconds: float = 3600.0
    jitter: float = 0.0
    default_ttl_seconds: int | None = None  # ttlSecondsAfterFinished when a spec has none
    # Per-work-type concurrency limits, set by the platform team: (work type, limit).
    concurrency_limits: tuple[tuple[str, int], ...] = ()
    # How long a claim's first status may wait for its outcome (core/lifecycle_hold.py).
    status_batch_seconds: float = 1.0
    # How long an agent's WorkOrder that no one claims goes without a status of its own;
    # the API server shows it PENDING meanwhile (core/lifecycle_hold.py).
    pending_status_seconds: float = 30.0

    def limit_for(self, work_type: str) -> int | None:
        return next((n for t, n in self.concurrency_limits if t == work_type), None)


@dataclass(frozen=True)
class Observation:
    now: datetime
    name: str
    namespace: str
    generation: int
    spec: WorkOrderSpec
    status: WorkOrderStatus
    lease: LeaseView | None = None
    build_run: BuildRunView | None = None
    waitpoints: dict[str, WaitpointView] = field(default_factory=dict)  # by gate key
    uid: str = ""
    random_value: float = 0.0  # drawn by the shell, so the decision itself stays pure
    # The API server refused a side effect of the previous decision for this very
    # observation: (reason, message, retryable). The attempt fails with it.
    action_error: tuple[str, str, bool] | None = None
    # A child's deterministic name is held by an object this WorkOrder does not control
    # (a squatter, or a deleted namesake's child awaiting garbage collection): what the
    # previous decision tried to create, described. Nothing is created this time; the
    # WorkOrder reports it (Stalled=True, reason NameTaken) and looks again later.
    name_taken: str | None = None
    # The workgate.io/rerun annotation: a value the status has not answered starts a
    # FAILED or CANCELLED WorkOrder over.
    rerun: str | None = None
    # Its work type's queue, when that type has a concurrency limit.
    queue: QueueView | None = None
    created: datetime | None = None  # metadata.creationTimestamp


NAME_TAKEN_RETRY_SECONDS = 5.0


# --- outputs ------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimLease:
    """Create the claim Lease for `attempt` (atomic: fails if it exists)."""

    name: str
    attempt: int
    holder: str
    duration_seconds: int


@dataclass(frozen=True)
class RenewLease:
    lease: LeaseView


@dataclass(frozen=True)
class RevokeLease:
    """End a claimant's live claim: it stops its work and releases the Lease."""

    lease: LeaseView
    reason: str


@dataclass(frozen=True)
class ReleaseLease:
    """Delete the claim Lease, only if it is still the one observed."""

    lease: LeaseView


@dataclass(frozen=True)
class ApplyObjects:
    objects: tuple[EmbeddedObject, ...]


@dataclass(frozen=True)
class CreateBuildRun:
    name: str
    build_name: str
    attempt: int


@dataclass(frozen=True)
class RecreateBuildRun:
    """Replace the attempt's BuildRun that Shipwright failed before it ran (BUILD_NOT_SEEN):
    delete that one (by uid), create it again marked as the attempt's second."""

    name: str
    uid: str
    build_name: str
    attempt: int


@dataclass(frozen=True)
class CancelBuildRun:
    """Stop a superseded attempt's BuildRun through Shipwright (spec.state)."""

    name: str


@dataclass(frozen=True)
class CreateWaitpoint:
    name: str
    gate: Gate


@dataclass(frozen=True)
class ActivateWaitpoint:
    waitpoint: WaitpointView
    timeout_seconds: int | None


@dataclass(frozen=True)
class CancelWaitpoint:
    waitpoint: WaitpointView


@dataclass(frozen=True)
class DeleteWaitpoint:
    """Remove a gate's closed waitpoint (a rerun decides it anew)."""

    waitpoint: WaitpointView


@dataclass(frozen=True)
class DeleteWorkOrder:
    """ttlSecondsAfterFinished has passed: delete it (its children go with it)."""

    uid: str


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


Action = (
    ClaimLease
    | RenewLease
    | RevokeLease
    | ReleaseLease
    | ApplyObjects
    | CreateBuildRun
    | RecreateBuildRun
    | CancelBuildRun
    | CreateWaitpoint
    | ActivateWaitpoint
    | CancelWaitpoint
    | DeleteWaitpoint
    | DeleteWorkOrder
)
# The actions that end a claim: done only once the status records why (or, with no status
# to write, on a WorkOrder view confirmed current: operator/workorders.py).
ENDS_A_CLAIM = (ReleaseLease, RevokeLease)


@dataclass
class Decision:
    status: WorkOrderStatus
    actions: list[Action] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    requeue_at: datetime | None = None
    # A claim that no status records yet (the operator's own, its BuildRun just started,
    # or an agent's): its status, and Events, may wait until then, so an attempt that
    # ends by that time costs one status write, not two (core/lifecycle_hold.py).
    status_may_wait_until: datetime | None = None

    def wake_at(self, when: datetime | None) -> None:
        if when is not None and (self.requeue_at is None or when < self.requeue_at):
            self.requeue_at = when
