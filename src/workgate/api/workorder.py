"""WorkOrder: a queued unit of work, claimed through a Lease and retried with backoff."""

from __future__ import annotations

from enum import StrEnum

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


class WorkOrderStatus(CamelModel):
    """Observed state, written only by the operator."""

    phase: Phase | None = Field(
        default=None,
        description=(
            "Queue phase: PENDING, CLAIMED, RETRY_PENDING, WAITING (at a gate), SUCCEEDED "
            "or FAILED."
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
    retry_count: int = Field(default=0, ge=0, description="Retries used so far.")
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
    completed_at: Timestamp | None = Field(
        default=None, description="When the WorkOrder reached SUCCEEDED or FAILED."
    )
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation this status was computed from."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description=("Standard conditions: Ready, Succeeded, Reconciling, Stalled, Claimed."),
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
