"""WorkOrder: a queued unit of work, claimed through a Lease and retried with backoff."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field

from workgate.api.common import CamelModel, Condition, Timestamp
from workgate.api.waitpoint import (
    DECISION_RULES,
    ApprovalRules,
    Rejection,
    SignalName,
    TimeoutPolicy,
    WaitpointStage,
)
from workgate.api.wire import TERMINAL_PHASES as TERMINAL_PHASES
from workgate.api.wire import Phase as Phase

# Admission refuses anything larger; the operator enforces per-document limits too.
MAX_YAML_CONTENT_BYTES = 256 * 1024
MAX_ERROR_LENGTH = 4096


GATE_KEY_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class GateStage(StrEnum):
    BEFORE_EXECUTION = "BeforeExecution"
    AFTER_SUCCESS = "AfterSuccess"


class Gate(ApprovalRules):
    """A declared waitpoint: the WorkOrder stops here until the required signals arrive."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": DECISION_RULES})

    key: str = Field(
        description="Key of the gate; its Waitpoint is named <workorder>.<key>.",
        min_length=1,
        max_length=40,
        pattern=GATE_KEY_PATTERN,
    )
    stage: GateStage = Field(
        description=(
            "Where the WorkOrder stops: BeforeExecution (before the first attempt is "
            "claimed) or AfterSuccess (after the work succeeded, before it is marked done)."
        ),
    )
    required_signal_names: list[SignalName] = Field(
        default_factory=list,
        max_length=32,
        description="Signals that must all arrive; empty means any one signal opens the gate.",
    )
    timeout_seconds: int | None = Field(
        default=None,
        ge=1,
        le=30 * 86400,
        description="Seconds after activation at which the gate's waitpoint expires.",
    )
    on_timeout: TimeoutPolicy = Field(
        default=TimeoutPolicy.FAIL,
        description="On expiry: Fail the WorkOrder, or Continue as if the gate had opened.",
    )
    forbid_self_approval: bool = Field(
        default=True,
        description=(
            "Refuse signals from whoever created this WorkOrder (recorded at admission in "
            "its workgate.io/created-by annotation). On by default: separation of duties "
            "means the author of a change does not approve it; set false only for gates "
            "that are not approvals (e.g. a smoke-test confirmation)."
        ),
    )


class ExitCodeOperator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"


class FailureAction(StrEnum):
    FAIL_WORK_ORDER = "FailWorkOrder"  # end the WorkOrder now: retrying would not help
    RETRY = "Retry"  # the default for any failure no rule matches


class ExitCodeRule(CamelModel):
    operator: ExitCodeOperator = Field(
        description="In: the rule matches these exit codes; NotIn: any other exit code."
    )
    values: list[Annotated[int, Field(ge=0, le=255)]] = Field(
        min_length=1,
        max_length=255,
        description="Exit codes of the agent's command (0-255).",
    )


class FailureRule(CamelModel):
    """One rule of a failure policy, as a Job's podFailurePolicy rule: the first that
    matches a failed attempt decides what happens to the WorkOrder."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.onExitCodes) != has(self.onReasons)",
                    "message": "a rule needs exactly one of onExitCodes and onReasons",
                }
            ]
        }
    )

    action: FailureAction = Field(
        description="FailWorkOrder: the WorkOrder fails at once with the reason; Retry: as usual."
    )
    on_exit_codes: ExitCodeRule | None = Field(
        default=None, description="Matches an agent's command by its exit code."
    )
    on_reasons: list[Annotated[str, Field(min_length=1, max_length=128)]] | None = Field(
        default=None,
        min_length=1,
        max_length=32,
        description=(
            "Matches a failure by its reason: an agent's (e.g. CommandFailed), a BuildRun's "
            "(e.g. BuildRunTimeout, Failed), or workgate's (ClaimTimedOut, "
            "AttemptDeadlineExceeded)."
        ),
    )


class FailurePolicy(CamelModel):
    rules: list[FailureRule] = Field(
        default_factory=list,
        max_length=20,
        description="Checked in order; the first rule that matches decides. None: retry.",
    )


class WorkOrderSpec(CamelModel):
    """What to do and how persistently to try. Written by the author, never by the operator."""

    work_type: str = Field(
        description=(
            'Type of work, e.g. "build", "test", "backup". The operator executes the work '
            "types it is configured for (by default `build`: a Shipwright Build run as a "
            "BuildRun); agents claim the others. Immutable."
        ),
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9._]*[a-z0-9])?$",
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "workType is immutable"}
            ]
        },
    )
    yaml_content: str = Field(
        description=(
            "Multi-document YAML the work runs from, e.g. a Shipwright `Build` "
            "(shipwright.io/v1beta1) for `build` work. Only allowlisted kinds, in the "
            "WorkOrder's own namespace, are applied. At most 256 KiB. Immutable."
        ),
        max_length=MAX_YAML_CONTENT_BYTES,
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "yamlContent is immutable"}
            ]
        },
    )
    max_retries: int = Field(
        default=3,
        ge=0,
        le=100,
        description="Maximum number of retry attempts after the first one fails.",
    )
    backoff_seconds: int = Field(
        default=60,
        ge=1,
        le=86400,
        description=(
            "Base backoff for exponential retry: retry n waits "
            "min(backoffSeconds * 2^n, the operator's cap) seconds (n counts from 0)."
        ),
    )
    claim_timeout_seconds: int = Field(
        default=3600,
        ge=1,
        le=7 * 86400,
        description=(
            "Seconds a claim stays valid without renewal; a claim whose Lease is not renewed "
            "within this time is stale and its attempt fails with reason ClaimTimedOut."
        ),
    )
    # The controls below have no schema default (unset means 0 / false), so the API server
    # adds nothing to a spec that GitOps applies without them: no drift.
    priority: int | None = Field(
        default=None,
        ge=-1000,
        le=1000,
        description=(
            "Order among pending WorkOrders of the same work type: higher first, then "
            "oldest (unset: 0). Agents and the operator's own execution honour it."
        ),
    )
    suspend: bool | None = Field(
        default=None,
        description=(
            "As Job.spec.suspend: while true no attempt is claimed (phase SUSPENDED). An "
            "attempt already running when it is set runs to its end; a retry it needs "
            "waits until the WorkOrder is resumed (set false)."
        ),
    )
    cancel: bool | None = Field(
        default=None,
        description=(
            "Cancel the WorkOrder: a running attempt is stopped (an agent terminates its "
            "command, a BuildRun is cancelled through Shipwright), open waitpoints close, "
            "and it ends CANCELLED. `kubectl workgate cancel` sets it."
        ),
    )
    active_deadline_seconds: int | None = Field(
        default=None,
        ge=1,
        le=365 * 86400,
        description=(
            "Seconds from the WorkOrder's start (status.startTime) after which it fails "
            "with reason DeadlineExceeded, whatever it is doing, waiting at a gate included."
        ),
    )
    attempt_deadline_seconds: int | None = Field(
        default=None,
        ge=1,
        le=30 * 86400,
        description=(
            "Seconds an attempt may run from its claim; a longer one is stopped and fails "
            "with reason AttemptDeadlineExceeded (retried, unless the failure policy says "
            "otherwise). Renewing the claim does not extend it."
        ),
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None,
        ge=0,
        le=365 * 86400,
        description=(
            "As on Jobs: seconds after the WorkOrder finished (SUCCEEDED, FAILED or "
            "CANCELLED) at which the operator deletes it, and the garbage collector its "
            "children. Unset: the operator's default (none unless configured)."
        ),
    )
    failure_policy: FailurePolicy | None = Field(
        default=None,
        description=(
            "Which failures are not worth retrying, as a Job's podFailurePolicy: by the "
            "agent command's exit code or by the failure's reason. Default: retry."
        ),
    )
    gates: list[Gate] = Field(
        default_factory=list,
        max_length=8,
        description=(
            "Approval gates: Waitpoints the operator creates with the WorkOrder and activates "
            "when the WorkOrder reaches their stage. Immutable."
        ),
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["key"],
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "gates are immutable"}
            ],
        },
    )


MAX_HISTORY = 16


class RunRecord(CamelModel):
    """How one run (the attempts before a rerun) ended."""

    phase: Phase = Field(description="FAILED or CANCELLED.")
    first_attempt: int = Field(ge=1, description="Its first attempt.")
    last_attempt: int = Field(ge=0, description="Its last attempt.")
    reason: str | None = Field(default=None, max_length=128, description="Why it ended.")
    message: str | None = Field(default=None, max_length=1024, description="Its last error.")
    completed_at: Timestamp | None = Field(default=None, description="When it ended.")


class QueueStatus(CamelModel):
    reason: str = Field(max_length=128, description="Why it waits, e.g. ConcurrencyLimit.")
    message: str = Field(default="", max_length=1024, description="Details.")
    position: int = Field(ge=1, description="1 is next for its work type.")


class WorkOrderStatus(CamelModel):
    """Observed state, written only by the operator."""

    phase: Phase | None = Field(
        default=None,
        description=(
            "Queue phase: QUEUED (at its work type's concurrency limit), PENDING, CLAIMED, "
            "RETRY_PENDING, WAITING (at a gate), SUSPENDED, SUCCEEDED, FAILED or CANCELLED. "
            "A claim is recorded up to a second after it was made (absent or PENDING until "
            "then): its first status waits for the outcome, so a short attempt goes to its "
            "outcome in one write (the claim is in its Lease meanwhile)."
        ),
    )
    waiting_on: str | None = Field(
        default=None, description="Keys of the gates the WorkOrder waits at, comma-separated."
    )
    waiting_stage: WaitpointStage | None = Field(
        default=None,
        description=(
            "Stage of the gates it waits at (or last waited at): BeforeExecution, "
            "AfterSuccess, or Dynamic (suspended by its claimant)."
        ),
    )
    attempt: int = Field(
        default=0, ge=0, description="Number of the current (or last) attempt, from 1."
    )
    retry_count: int = Field(
        default=0, ge=0, description="Retries so far, reruns included (see retryBase)."
    )
    claimed_by: str | None = Field(
        default=None, description="Identity of the claimant holding the current attempt's Lease."
    )
    claimed_at: Timestamp | None = Field(
        default=None, description="When the current attempt was claimed."
    )
    lease_name: str | None = Field(
        default=None, description="Name of the coordination.k8s.io Lease that holds the claim."
    )
    build_run_name: str | None = Field(
        default=None, description="BuildRun of the current attempt (build work only)."
    )
    last_error: str | None = Field(
        default=None, description="Most recent error message from a failed attempt."
    )
    last_error_reason: str | None = Field(
        default=None, description="CamelCase reason of the most recent failure."
    )
    last_error_at: Timestamp | None = Field(
        default=None, description="Timestamp of the most recent failure."
    )
    rejection: Rejection | None = Field(
        default=None,
        description="Set when a gate was rejected: which one, by whom, when, and the payload.",
    )
    next_retry_after: Timestamp | None = Field(
        default=None, description="When a RETRY_PENDING WorkOrder becomes PENDING again."
    )
    start_time: Timestamp | None = Field(
        default=None,
        description="When the WorkOrder (or its latest rerun) started: activeDeadlineSeconds "
        "counts from here.",
    )
    retry_base: int = Field(
        default=0,
        ge=0,
        description="retryCount when the latest rerun started: maxRetries counts from here.",
    )
    rerun: str | None = Field(
        default=None,
        max_length=128,
        description="The workgate.io/rerun annotation value the latest rerun answered.",
    )
    history: list[RunRecord] = Field(
        default_factory=list,
        max_length=MAX_HISTORY,
        description=f"Earlier runs of a rerun WorkOrder, newest last (at most {MAX_HISTORY}).",
    )
    queue: QueueStatus | None = Field(
        default=None,
        description="While QUEUED: why, and where the WorkOrder stands in its queue.",
    )
    completed_at: Timestamp | None = Field(
        default=None, description="When the WorkOrder reached SUCCEEDED or FAILED."
    )
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation this status was computed from."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description=(
            "Standard conditions: Ready, Succeeded, Claimed, Suspended, Cancelled, and "
            "kstatus's Reconciling and Stalled, which are present only while True "
            "(absent means False)."
        ),
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )


class WorkOrder(CamelModel):
    """A queued unit of work of a workType, claimed by one claimant at a time.

    Admission records who created it in the annotation workgate.io/created-by (users cannot
    set or change it); gates use it to refuse self-approval.
    """

    spec: WorkOrderSpec
    status: WorkOrderStatus | None = None
