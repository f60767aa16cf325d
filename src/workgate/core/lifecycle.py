"""The WorkOrder state machine, as one pure function.

`decide(observation, policy)` looks at everything the operator knows about one WorkOrder
(its spec and status, its claim Lease, its attempt's BuildRun, its gates, its queue, the
clock) and returns the status it should have, the side effects to perform first, and when
to look again. It never talks to the API: the operator's shell executes the decision and
writes the status once. Because the input is the whole observed world, running it twice,
or after a crash at any point, converges on the same result (level-based).

The gate rules live in `lifecycle_gates`, the conditions in `lifecycle_status`, the work
controls' pure questions (failure policy, deadlines, TTL, queues) in `controls`.
"""

from __future__ import annotations

from workgate.api.waitpoint import WaitpointStage
from workgate.api.wire import current_attempt
from workgate.api.workorder import (
    MAX_ERROR_LENGTH,
    TERMINAL_PHASES,
    FailureAction,
    Phase,
)
from workgate.core import controls
from workgate.core.backoff import backoff_seconds, next_retry_time
from workgate.core.claims import LeaseView, Outcome
from workgate.core.decisions import (
    BUILD_NOT_SEEN,
    CLAIMED_EVENT,
    NAME_TAKEN_RETRY_SECONDS,
    PERMANENT_BUILD_RUN_REASONS,
    Action,
    ActivateWaitpoint,
    ApplyObjects,
    BuildRunView,
    CancelBuildRun,
    CancelWaitpoint,
    ClaimLease,
    CreateBuildRun,
    CreateWaitpoint,
    Decision,
    DeleteWaitpoint,
    DeleteWorkOrder,
    Event,
    Observation,
    Policy,
    RecreateBuildRun,
    ReleaseLease,
    RenewLease,
    RevokeLease,
    WaitpointView,
)
from workgate.core.lifecycle_build import BuildRules
from workgate.core.lifecycle_controls import ControlRules
from workgate.core.lifecycle_gates import GateRules
from workgate.core.lifecycle_hold import HoldRules
from workgate.core.lifecycle_status import StatusRules, copied
from workgate.core.naming import build_run_name, lease_name

# --- the machine --------------------------------------------------------------------


class _Machine(BuildRules, ControlRules, GateRules, HoldRules, StatusRules):
    def __init__(self, obs: Observation, policy: Policy) -> None:
        self.obs = obs
        self.policy = policy
        self.st = copied(obs.status)
        self.decision = Decision(status=self.st)
        self.local = obs.spec.work_type in policy.local_work_types
        self.waitpoints = dict(obs.waitpoints)

    # helpers
    def event(self, type_: str, reason: str, message: str) -> None:
        """Record an Event; a claim and its outcome in one decision make one Event (an
        agent that finished before the operator looked): Events are API writes too."""
        claimed = [e for e in self.decision.events if e.reason == CLAIMED_EVENT]
        if claimed and reason != CLAIMED_EVENT:
            self.decision.events = [e for e in self.decision.events if e.reason != CLAIMED_EVENT]
            message = f"{claimed[0].message}; {message}"
        self.decision.events.append(Event(type_, reason, message))

    def draining(self, lease: LeaseView) -> bool:
        """A revoked claim whose holder may still be stopping its work: the Lease stays
        until the holder releases it or it goes stale (by then fencing stopped the work),
        so no next attempt can be claimed beside it."""
        return (
            lease.revoked is not None
            and self.agents_claim(lease)
            and lease.outcome is None
            and not lease.is_stale(self.obs.now)
        )

    def unrecorded_claim(self, lease: LeaseView | None) -> bool:
        """The operator's own live claim on the current attempt of a WorkOrder whose status
        has never been written (only a work type without a concurrency limit: a limited
        type's slots are counted from status, so there a claim is always recorded first)."""
        return (
            self.local
            and self.obs.status.phase is None
            and lease is not None
            and not self.agents_claim(lease)
            and lease.attempt == current_attempt(self.st.retry_count)
            and lease.revoked is None
            and lease.outcome is None
            and self.policy.limit_for(self.obs.spec.work_type) is None
        )

    def agents_claim(self, lease: LeaseView) -> bool:
        """Held by an agent, not by the operator: other work types than the operator's
        own are only ever claimed by agents (who may be the operator's user, in tests)."""
        return not self.local or lease.holder != self.policy.identity

    def release(self) -> None:
        lease = self.obs.lease
        if lease is None:
            return
        if self.draining(lease):
            self.decision.wake_at(lease.expires_at)
            return
        self.decision.actions.append(ReleaseLease(lease))

    def revoke_live(self, lease: LeaseView, reason: str) -> bool:
        """Revoke the claim if its holder may still be working (it stops, then releases
        it; nothing is claimed beside it meanwhile); whether it did."""
        if not lease.is_live(self.obs.now):
            return False
        self.decision.actions.append(RevokeLease(lease, reason))
        self.decision.wake_at(lease.expires_at)
        return True

    def end_claim(self, reason: str) -> None:
        """The current attempt is over whatever its claimant is doing: a live claim of an
        agent's is revoked (it stops its work), anything else released."""
        lease = self.obs.lease
        if (
            lease is not None
            and not self.local
            and lease.attempt == current_attempt(self.st.retry_count)  # recorded or not yet
            and self.revoke_live(lease, reason)
        ):
            return
        self.release()

    def clear_claim(self) -> None:
        self.st.claimed_by = None
        self.st.claimed_at = None
        self.st.lease_name = None

    def succeed(self) -> None:
        # The claim Lease stays: the record of who ran the attempt (as a Job keeps its
        # Pods), removed with the WorkOrder by the garbage collector. One write fewer.
        self.clear_claim()
        if self.gates(WaitpointStage.AFTER_SUCCESS):
            self.event("Normal", "WorkSucceeded", f"attempt {self.st.attempt} succeeded")
            self.wait_at(WaitpointStage.AFTER_SUCCESS)
            return
        self.complete()

    def complete(self) -> None:
        self.st.phase = Phase.SUCCEEDED
        self.st.completed_at = self.obs.now
        self.event("Normal", "Succeeded", f"attempt {self.st.attempt} succeeded")

    def fail(
        self, reason: str, message: str, *, retryable: bool, exit_code: int | None = None
    ) -> None:
        now = self.obs.now
        spec = self.obs.spec
        self.cancel_running_build()
        self.end_claim(reason)
        self.clear_claim()
        if retryable and (
            controls.failure_action(spec.failure_policy, reason, exit_code)
            == FailureAction.FAIL_WORK_ORDER
        ):
            retryable = False
            message = f"{message} (the failure policy does not retry it)"
        self.st.last_error = message[:MAX_ERROR_LENGTH]
        self.st.last_error_reason = reason
        self.st.last_error_at = now
        if retryable and self.st.retry_count - self.st.retry_base < spec.max_retries:
            delay = backoff_seconds(
                spec.backoff_seconds,
                self.st.retry_count - self.st.retry_base,
                self.policy.backoff_cap_seconds,
                jitter=self.policy.jitter,
                random_value=self.obs.random_value,
            )
            self.st.retry_count += 1
            self.st.next_retry_after = next_retry_time(now, delay)
            self.st.phase = Phase.RETRY_PENDING
            self.decision.wake_at(self.st.next_retry_after)
            self.event(
                "Warning",
                reason,
                f"attempt {self.st.attempt} failed: {message[:512]}; retry "
                f"{self.st.retry_count - self.st.retry_base}/{spec.max_retries} in {delay:g}s",
            )
        else:
            self.st.phase = Phase.FAILED
            self.st.completed_at = now
            self.st.next_retry_after = None
            why = "" if retryable else " (not retryable)"
            self.event("Warning", reason, f"failed{why}: {message[:512]}")

    # phases
    def run(self) -> Decision:
        if self.st.phase in TERMINAL_PHASES:
            self.finished()
            return self.finish()
        self.ensure_waitpoints()
        if self.st.phase is None:
            self.start()
        if self.obs.spec.cancel:
            self.cancel()
        elif self.past_deadline():
            pass
        elif self.st.phase == Phase.WAITING:
            self.waiting()
        elif self.st.phase == Phase.SUSPENDED:
            self.suspended()
        if self.st.phase == Phase.RETRY_PENDING:
            self.retry_pending()
        if self.st.phase in (Phase.PENDING, Phase.QUEUED):
            self.pending()
        if self.st.phase == Phase.CLAIMED:
            self.claimed()
        if self.st.phase in TERMINAL_PHASES:
            self.cancel_open_waitpoints()
        return self.finish()

    def start(self) -> None:
        self.st.phase = Phase.PENDING  # no Event: the status says it, the claim follows
        self.st.start_time = self.obs.now
        lease = self.obs.lease
        if self.unrecorded_claim(lease):
            # Our own claim that no status records yet (its first status was held back,
            # or the operator died before writing it): the attempt runs, adopt it.
            assert lease is not None
            if lease.acquire_time is not None and lease.acquire_time < self.obs.now:
                self.st.start_time = lease.acquire_time
            self.take_claim(lease.holder or self.policy.identity, lease)
            return
        if self.local and self.build_work() is None:
            return
        if self.gates(WaitpointStage.BEFORE_EXECUTION):
            self.wait_at(WaitpointStage.BEFORE_EXECUTION)

    def retry_pending(self) -> None:
        due = self.st.next_retry_after
        lease = self.obs.lease
        if due is not None and self.obs.now < due:
            if lease is not None and lease.attempt == current_attempt(self.st.retry_count):
                # claimed before its time: not this attempt's claim
                self.decision.actions.append(ReleaseLease(lease))
            self.decision.wake_at(due)
            return
        self.st.phase = Phase.PENDING
        self.st.next_retry_after = None
        self.event("Normal", "Requeued", f"retry {self.st.retry_count - self.st.retry_base} is due")

    def pending(self) -> None:
        attempt = current_attempt(self.st.retry_count)
        lease = self.obs.lease
        if lease is not None:
            if self.draining(lease):  # a revoked claimant is still stopping
                self.decision.wake_at(lease.expires_at)
                return
            if lease.attempt == attempt and lease.revoked is None:
                # Claimed past the limit (no webhook to refuse it): stopped, unless its work
                # is done already (then its outcome counts: running it again undoes nothing).
                if lease.outcome is None and not self.admitted():
                    self.spend_unadmitted_claim(lease)
                    return
                self.take_claim(lease.holder or "unknown", lease)  # CLAIMED handles the rest
                return
            self.end_left_over_claim(lease, attempt)
            return
        if self.obs.spec.suspend:
            self.st.phase = Phase.SUSPENDED
            self.event("Normal", "Suspended", "spec.suspend is true: not claimed until resumed")
            return
        if not self.admitted():
            return
        if not self.local:
            self.hold_unclaimed()
            return  # an agent's claim (a Lease event) wakes us
        if self.build_work() is None or self.obs.name_taken:
            return
        name = lease_name(self.obs.name)
        self.decision.actions.append(
            ClaimLease(name, attempt, self.policy.identity, self.obs.spec.claim_timeout_seconds)
        )
        self.take_claim(self.policy.identity, None)

    def take_claim(self, holder: str, lease: LeaseView | None) -> None:
        self.st.phase = Phase.CLAIMED
        self.st.attempt = current_attempt(self.st.retry_count)
        self.st.claimed_by = holder
        self.st.claimed_at = (lease.acquire_time if lease else None) or self.obs.now
        self.st.lease_name = lease.name if lease else lease_name(self.obs.name)
        self.st.build_run_name = (
            build_run_name(self.obs.name, self.st.attempt) if self.local else None
        )
        if lease is not None and self.agents_claim(lease):  # the operator's own claim is in
            # status and the Lease (an Event per build attempt would be a write that says
            # nothing new)
            self.event(
                "Normal", CLAIMED_EVENT, f"attempt {self.st.attempt} claimed by {lease.claimant}"
            )

    def claimed(self) -> None:
        lease = self.obs.lease
        if lease is not None and lease.attempt != self.st.attempt:
            lease = None  # some other attempt's Lease does not hold this one
        if lease is not None and lease.outcome is None and self.past_attempt_deadline():
            return
        if self.local:
            self.claimed_locally(lease)
            return
        if lease is None:
            if not any(isinstance(a, ClaimLease) for a in self.decision.actions):
                self.fail(
                    "ClaimLost",
                    "the claim's Lease disappeared before a result was reported",
                    retryable=True,
                )
            return
        if lease.outcome == Outcome.SUCCEEDED:
            self.succeed()
        elif lease.outcome == Outcome.SUSPENDED and lease.waitpoint_key:
            self.suspend(lease.waitpoint_key)
        elif lease.outcome == Outcome.FAILED:
            self.fail(
                lease.error_reason or "AttemptFailed",
                lease.error or f"{lease.holder} reported a failure",
                retryable=True,
                exit_code=lease.exit_code,
            )
        elif lease.is_stale(self.obs.now):
            self.fail_timed_out(lease)
        else:
            if lease.holder and lease.holder != self.st.claimed_by:
                self.st.claimed_by = lease.holder
            self.decision.wake_at(lease.expires_at)
            self.hold_agents_claim(lease)

    def suspend(self, key: str) -> None:
        """The claimant parked its attempt at a waitpoint it created: not a failure."""
        self.release()
        self.clear_claim()
        self.event("Normal", "Suspended", f"attempt {self.st.attempt} suspended at {key}")
        self.st.phase = Phase.WAITING
        self.st.waiting_stage = WaitpointStage.DYNAMIC
        self.st.waiting_on = key
        self.waiting()

    def fail_timed_out(self, lease: LeaseView) -> None:
        self.fail(
            "ClaimTimedOut",
            f"claim by {lease.claimant} was not renewed within {lease.duration_seconds}s",
            retryable=True,
        )


def decide(obs: Observation, policy: Policy) -> Decision:
    return _Machine(obs, policy).run()


__all__ = [
    "BUILD_NOT_SEEN",
    "NAME_TAKEN_RETRY_SECONDS",
    "PERMANENT_BUILD_RUN_REASONS",
    "Action",
    "ActivateWaitpoint",
    "ApplyObjects",
    "BuildRunView",
    "CancelBuildRun",
    "CancelWaitpoint",
    "ClaimLease",
    "CreateBuildRun",
    "CreateWaitpoint",
    "Decision",
    "DeleteWaitpoint",
    "DeleteWorkOrder",
    "Event",
    "Observation",
    "Policy",
    "RecreateBuildRun",
    "ReleaseLease",
    "RenewLease",
    "RevokeLease",
    "WaitpointView",
    "decide",
]
