"""A WorkOrder's status: observed state, written only by the operator."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from workgate.api.common import CamelModel, Condition, Timestamp
from workgate.api.waitpoint import Rejection, WaitpointStage
from workgate.api.wire import Phase, recorded_phase

MAX_HISTORY = 16


class RunRecord(CamelModel):
    """How one run (the attempts before a rerun) ended."""

    phase: Phase = Field(description="FAILED or CANCELLED.")
    first_attempt: int = Field(
        ge=1,
        description="Its first attempt (not counting those spent by claims revoked past a "
        "concurrency limit, which no retry counts either).",
    )
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

    @classmethod
    def recorded(cls, raw: Mapping[str, Any] | None) -> WorkOrderStatus:
        """A WorkOrder's status as the operator recorded it: its phase is None before the
        operator's first write, whatever the API server's default shows (wire.py
        recorded_phase)."""
        status = cls.model_validate(raw or {})
        if status.phase is not None and recorded_phase(raw) is None:
            return status.model_copy(update={"phase": None})
        return status

    def to_wire(self) -> dict[str, Any]:
        """As written: an empty history and a zero retryBase (their defaults) are left out,
        so every status write and watch event is that much smaller."""
        wire = super().to_wire()
        for key in ("history", "retryBase"):
            if not wire.get(key):
                wire.pop(key, None)
        return wire

    phase: Phase | None = Field(
        default=None,
        description=(
            "Queue phase: QUEUED (at its work type's concurrency limit), PENDING, CLAIMED, "
            "RETRY_PENDING, WAITING (at a gate), SUSPENDED, SUCCEEDED, FAILED or CANCELLED. "
            "PENDING from creation on (the API server's default, as for a new Pod) until the "
            "operator records another phase; its own record carries observedGeneration. An "
            "agent's WorkOrder that no one claims gets that record (conditions, startTime) "
            "30 seconds after its creation. A claim is recorded up to a second after it was "
            "made: its first status waits for the outcome, so a short attempt goes to its "
            "outcome in one write (the claim is in its Lease meanwhile)."
        ),
        json_schema_extra={"default": "PENDING"},
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
        description="retryCount when the latest rerun started, plus the attempts spent by "
        "claims revoked past a concurrency limit: maxRetries counts from here.",
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
        default=None,
        description=(
            "The .metadata.generation this status was computed from; 0 (the default) until "
            "the operator first writes status, so kstatus and GitOps tools read a new "
            "WorkOrder as not yet reconciled."
        ),
        json_schema_extra={"default": 0},
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
