"""The conditions a WorkOrder's status shows, from the phase the machine ended in.

A mixin of `core.lifecycle._Machine`: kstatus reads Ready/Reconciling/Stalled, `kubectl
wait` users read Succeeded, and Claimed/Suspended/Cancelled say what the phase says.
Reconciling and Stalled are there only while True.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from workgate.api.common import Condition, ConditionStatus
from workgate.api.workorder import TERMINAL_PHASES, Phase, WorkOrderStatus
from workgate.core.conditions import drop_condition, set_condition
from workgate.core.decisions import NAME_TAKEN_RETRY_SECONDS, Decision, Observation

M = TypeVar("M")

# kstatus's abnormal-true conditions: present only while True, absent meaning False (as
# Flux's controllers do). Each status write then carries three conditions where it carried
# five, and a condition write is most of what a status write costs the API server.
ABNORMAL_TRUE = frozenset({"Reconciling", "Stalled"})


def copied(value: M) -> M:
    """A deep copy of a status (`model_copy(deep=True)`'s result, at a fraction of its
    cost: copy.deepcopy's memo and dispatch were most of a decision's time). Models are
    copied with their set fields, lists and dicts anew; everything else in a status is
    immutable (str, int, datetime, enums) and shared."""
    if isinstance(value, BaseModel):
        new = value.model_copy()
        fields = new.__dict__
        for name, item in fields.items():
            if isinstance(item, BaseModel | list | dict):
                fields[name] = copied(item)
        return new
    if isinstance(value, list):
        return [copied(item) for item in value]  # type: ignore[return-value]
    if isinstance(value, dict):
        result: dict[Any, Any] = {k: copied(v) for k, v in value.items()}
        return result  # type: ignore[return-value]
    return value


class StatusRules:
    obs: Observation
    st: WorkOrderStatus
    decision: Decision

    if TYPE_CHECKING:  # provided by the machine

        def event(self, type_: str, reason: str, message: str) -> None: ...

    def finish(self) -> Decision:
        st, gen, now = self.st, self.obs.generation, self.obs.now
        spec = self.obs.spec
        phase = Phase(st.phase) if st.phase else Phase.PENDING
        if phase != Phase.QUEUED:
            st.queue = None
        reason = {
            Phase.QUEUED: st.queue.reason if st.queue else "Queued",
            Phase.PENDING: "Queued",
            Phase.CLAIMED: "Claimed",
            Phase.RETRY_PENDING: "RetryPending",
            Phase.WAITING: "Waiting",
            Phase.SUSPENDED: "Suspended",
            Phase.SUCCEEDED: "Succeeded",
            Phase.FAILED: st.last_error_reason or "Failed",
            Phase.CANCELLED: "Cancelled",
        }[phase]
        message = {
            Phase.QUEUED: (st.queue.message if st.queue else "waiting for a slot"),
            Phase.PENDING: f"waiting for a claimant of {spec.work_type} work",
            Phase.CLAIMED: f"attempt {st.attempt} held by {st.claimed_by}",
            Phase.RETRY_PENDING: f"retry {st.retry_count} after {st.next_retry_after}",
            Phase.WAITING: f"waiting at gates {st.waiting_on} ({st.waiting_stage})",
            Phase.SUSPENDED: "spec.suspend is true: no attempt is claimed until it is false",
            Phase.SUCCEEDED: f"succeeded on attempt {st.attempt}",
            Phase.FAILED: st.last_error or "failed",
            Phase.CANCELLED: f"cancelled{f' during attempt {st.attempt}' if st.attempt else ''}",
        }[phase]
        T, F, U = ConditionStatus.TRUE, ConditionStatus.FALSE, ConditionStatus.UNKNOWN
        wanted = {
            "Succeeded": {Phase.SUCCEEDED: T, Phase.FAILED: F, Phase.CANCELLED: F}.get(phase, U),
            "Ready": T if phase == Phase.SUCCEEDED else F,
            "Reconciling": F if phase in TERMINAL_PHASES | {Phase.SUSPENDED} else T,
            "Stalled": T if phase == Phase.FAILED else F,
            "Claimed": T if phase == Phase.CLAIMED else F,
        }
        conds = st.conditions
        blocked = self.obs.name_taken and phase not in TERMINAL_PHASES
        for type_, value in wanted.items():
            if type_ == "Stalled" and blocked:
                continue  # report_name_taken sets it: one change, not two per look
            if type_ in ABNORMAL_TRUE and value != T:
                conds = drop_condition(conds, type_)
                continue
            conds = set_condition(conds, type_, value, reason, message, generation=gen, now=now)
        if spec.suspend or phase == Phase.SUSPENDED:
            running = phase == Phase.CLAIMED
            conds = set_condition(
                conds,
                "Suspended",
                F if running else T,
                "AttemptRunning" if running else "Suspended",
                "suspends when the running attempt ends" if running else message,
                generation=gen,
                now=now,
            )
        elif any(c.type == "Suspended" for c in conds):
            conds = set_condition(
                conds, "Suspended", F, "Resumed", "spec.suspend is false", generation=gen, now=now
            )
        if spec.cancel or phase == Phase.CANCELLED:
            done = phase == Phase.CANCELLED
            conds = set_condition(
                conds,
                "Cancelled",
                T if done else F,
                "Cancelled" if done else "Finished",
                message if done else f"spec.cancel came after the WorkOrder {phase}",
                generation=gen,
                now=now,
            )
        conds = self.report_name_taken(conds, phase)
        st.conditions = conds
        st.observed_generation = gen
        return self.decision

    def report_name_taken(self, conds: list[Condition], phase: Phase) -> list[Condition]:
        blocked = self.obs.name_taken if phase not in TERMINAL_PHASES else None
        if not blocked:
            return conds
        conds = set_condition(
            conds,
            "Stalled",
            ConditionStatus.TRUE,
            "NameTaken",
            blocked,
            generation=self.obs.generation,
            now=self.obs.now,
        )
        already = any(
            c.type == "Stalled" and c.status == ConditionStatus.TRUE and c.reason == "NameTaken"
            for c in self.obs.status.conditions
        )
        if not already:
            self.event("Warning", "NameTaken", blocked)
        self.decision.wake_at(self.obs.now + timedelta(seconds=NAME_TAKEN_RETRY_SECONDS))
        return conds
