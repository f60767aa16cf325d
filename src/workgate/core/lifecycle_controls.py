"""The work-control rules of the WorkOrder state machine: cancel, suspend and resume,
rerun, deadlines, TTL and queue admission (what Jobs and Argo users expect).

A mixin of `core.lifecycle._Machine` (it shares the machine's state); the pure questions
behind them (failure policy, deadlines, TTL, queue order) are in `core.controls`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workgate.api.wire import current_attempt
from workgate.api.workorder import (
    MAX_HISTORY,
    Phase,
    QueueStatus,
    RunRecord,
    WorkOrderStatus,
)
from workgate.core import controls
from workgate.core.claims import LeaseView
from workgate.core.decisions import (
    Decision,
    DeleteWorkOrder,
    Observation,
    Policy,
    ReleaseLease,
    RevokeLease,
)


class ControlRules:
    obs: Observation
    policy: Policy
    st: WorkOrderStatus
    decision: Decision

    if TYPE_CHECKING:  # provided by the machine and the gate rules

        def event(self, type_: str, reason: str, message: str) -> None: ...
        def fail(
            self, reason: str, message: str, *, retryable: bool, exit_code: int | None = None
        ) -> None: ...
        def cancel_running_build(self) -> None: ...
        def end_claim(self, reason: str) -> None: ...
        def clear_claim(self) -> None: ...
        def draining(self, lease: LeaseView) -> bool: ...
        def agents_claim(self, lease: LeaseView) -> bool: ...
        def revoke_live(self, lease: LeaseView, reason: str) -> bool: ...
        def release(self) -> None: ...
        def cancel_open_waitpoints(self) -> None: ...
        def reset_unpassed_gates(self) -> None: ...
        def ensure_waitpoints(self) -> None: ...
        def start(self) -> None: ...
        def retry_pending(self) -> None: ...
        def pending(self) -> None: ...
        def claimed(self) -> None: ...

    def cancel(self) -> None:
        """spec.cancel: stop whatever runs, close the gates, end CANCELLED."""
        attempt = self.st.attempt if self.st.phase == Phase.CLAIMED else None
        self.cancel_running_build()
        self.end_claim(controls.CANCELLED)
        self.clear_claim()
        self.st.phase = Phase.CANCELLED
        self.st.completed_at = self.obs.now
        self.st.next_retry_after = None
        self.st.waiting_on = None
        running = f" (attempt {attempt} stopped)" if attempt else ""
        self.event("Normal", "Cancelled", f"cancelled by spec.cancel{running}")

    def finished(self) -> None:
        """Terminal: a rerun request starts it over; else its TTL runs out."""
        rerun = self.obs.rerun
        if (
            rerun
            and rerun != self.st.rerun
            and self.st.phase in (Phase.FAILED, Phase.CANCELLED)
            and not self.obs.spec.cancel
        ):
            self.start_over(rerun)
            return
        lease = self.obs.lease
        ours_done = lease is not None and (
            lease.outcome is not None
            or (self.st.phase == Phase.SUCCEEDED and not self.agents_claim(lease))
        )
        if lease is not None and self.draining(lease):
            self.decision.wake_at(lease.expires_at)  # released by its holder, or stale then
        elif lease is not None and not ours_done:
            # A claim still live (an agent claimed as the WorkOrder ended, or a crash came
            # between the status write and the release): an agent's is revoked, so its
            # work stops; anything else is released.
            self.end_claim(controls.CANCELLED if self.st.phase == Phase.CANCELLED else "Finished")
        self.cancel_open_waitpoints()
        ttl = controls.ttl_seconds(self.obs.spec, self.policy.default_ttl_seconds)
        expires = controls.deadline(self.st.completed_at, ttl)
        if expires is not None and self.obs.now >= expires:
            self.decision.actions.append(DeleteWorkOrder(self.obs.uid))
        else:
            self.decision.wake_at(expires)

    def start_over(self, rerun: str) -> None:
        """`kubectl workgate retry`: a fresh retry budget, attempts counting on, the run
        that ended kept in the (bounded) history."""
        st = self.st
        record = RunRecord(
            phase=Phase(st.phase or Phase.FAILED),
            first_attempt=current_attempt(st.retry_base),
            last_attempt=st.attempt,
            reason=(st.last_error_reason or None) and str(st.last_error_reason)[:128],
            message=(st.last_error or None) and str(st.last_error)[:1024],
            completed_at=st.completed_at,
        )
        st.history = [*st.history, record][-MAX_HISTORY:]
        st.retry_count += 1  # the rerun's attempt is a new one: names stay injective
        st.retry_base = st.retry_count
        st.rerun = rerun
        st.completed_at = None
        st.next_retry_after = None
        st.rejection = None
        st.last_error = st.last_error_reason = None
        st.last_error_at = None
        st.waiting_on = None
        st.waiting_stage = None
        first = current_attempt(st.retry_count)
        self.event("Normal", "Rerun", f"started over from attempt {first}")
        self.reset_unpassed_gates()
        self.ensure_waitpoints()
        self.start()
        if self.st.phase == Phase.RETRY_PENDING:
            self.retry_pending()
        if self.st.phase == Phase.PENDING:
            self.pending()
        if self.st.phase == Phase.CLAIMED:
            self.claimed()

    def past_deadline(self) -> bool:
        """activeDeadlineSeconds: the whole WorkOrder, gates and suspension included."""
        due = controls.deadline(self.st.start_time, self.obs.spec.active_deadline_seconds)
        if due is None:
            return False
        if self.obs.now < due:
            self.decision.wake_at(due)
            return False
        seconds = self.obs.spec.active_deadline_seconds
        self.fail(
            controls.DEADLINE_EXCEEDED,
            f"the WorkOrder ran past its activeDeadlineSeconds ({seconds}s)",
            retryable=False,
        )
        return True

    def suspended(self) -> None:
        if self.obs.spec.suspend:
            return
        # As a Job: the active deadline counts afresh from the resume.
        self.st.start_time = self.obs.now
        due = self.st.next_retry_after
        self.st.phase = Phase.RETRY_PENDING if due and self.obs.now < due else Phase.PENDING
        self.event("Normal", "Resumed", "spec.suspend is false")

    def admitted(self) -> bool:
        """A work type at its concurrency limit: QUEUED (with its position) until a slot
        frees; the shell's queue view says which WorkOrders the free slots go to."""
        queue = self.obs.queue
        if queue is None or queue.admitted:
            if self.st.phase == Phase.QUEUED:
                self.st.phase = Phase.PENDING
            return True
        if self.st.phase != Phase.QUEUED:
            self.event("Normal", "Queued", f"{self.obs.spec.work_type} is at its limit")
        self.st.phase = Phase.QUEUED
        self.st.queue = QueueStatus(
            reason="ConcurrencyLimit",
            message=(
                f"{queue.active}/{queue.limit} {self.obs.spec.work_type} WorkOrders hold a "
                f"slot; position {queue.position} in the queue"
            ),
            position=queue.position,
        )
        return False

    def spend_unadmitted_claim(self, lease: LeaseView) -> None:
        """An agent claimed past its work type's concurrency limit (no webhook refused it):
        the claim is revoked, and its attempt number spent. The agent may have started
        the command before the revocation reaches it, so the next claim runs the next
        attempt, and no attempt runs twice. Not a retry: maxRetries counts from
        retryBase, which moves with it."""
        self.decision.actions.append(RevokeLease(lease, "ConcurrencyLimit"))
        self.decision.wake_at(lease.expires_at)
        self.st.retry_count += 1
        self.st.retry_base += 1
        self.event(
            "Warning",
            "ClaimRevoked",
            f"attempt {lease.attempt} was claimed by {(lease.holder or 'unknown')[:128]} past the "
            f"{self.obs.spec.work_type} concurrency limit: revoked; the next claim runs "
            f"attempt {current_attempt(self.st.retry_count)}",
        )

    def end_left_over_claim(self, lease: LeaseView, attempt: int) -> None:
        """A claim on another attempt than the current one. An agent's on an attempt that
        is over, which may still be working (not reported on, not revoked, not stale: its
        revocation did not land), is told to stop, and the next claim waits while it
        drains; anything else is released."""
        old_attempt = self.agents_claim(lease) and (lease.attempt or 0) < attempt
        if old_attempt and self.revoke_live(lease, "Superseded"):
            return
        self.decision.actions.append(ReleaseLease(lease))
        self.decision.wake_at(self.obs.now)

    def past_attempt_deadline(self) -> bool:
        seconds = self.obs.spec.attempt_deadline_seconds
        due = controls.deadline(self.st.claimed_at, seconds)
        if due is None:
            return False
        if self.obs.now < due:
            self.decision.wake_at(due)
            return False
        self.fail(
            controls.ATTEMPT_DEADLINE_EXCEEDED,
            f"attempt {self.st.attempt} ran past its attemptDeadlineSeconds ({seconds}s)",
            retryable=True,
        )
        return True
