"""WorkOrder: a queued unit of work, claimed through a Lease and retried with backoff."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field

from workgate.api.common import CamelModel
from workgate.api.waitpoint import (
    DECISION_RULES,
    ApprovalRules,
    SignalName,
    TimeoutPolicy,
)
from workgate.api.wire import TERMINAL_PHASES as TERMINAL_PHASES
from workgate.api.wire import Phase as Phase
from workgate.api.workorder_status import MAX_HISTORY as MAX_HISTORY
from workgate.api.workorder_status import QueueStatus as QueueStatus
from workgate.api.workorder_status import RunRecord as RunRecord
from workgate.api.workorder_status import WorkOrderStatus as WorkOrderStatus

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


class WorkOrder(CamelModel):
    """A queued unit of work of a workType, claimed by one claimant at a time.

    Admission records who created it in the annotation workgate.io/created-by (users cannot
    set or change it); gates use it to refuse self-approval.
    """

    spec: WorkOrderSpec
    # The API server shows a WorkOrder's status with its defaults (phase PENDING) from its
    # creation on, as it shows a new Pod Pending: queued work reads as queued at once,
    # without a write. What the operator itself recorded has status.observedGeneration
    # (api/wire.py recorded_phase).
    status: WorkOrderStatus | None = Field(default=None, json_schema_extra={"default": {}})
