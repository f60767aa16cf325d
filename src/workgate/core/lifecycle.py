"""The WorkOrder state machine, as one pure function.

`decide(observation, policy)` looks at everything the operator knows about one WorkOrder
(its spec and status, its claim Lease, its attempt's BuildRun, the clock) and returns
the status it should have, the side effects to perform first, and when to look again.
It never talks to the API: the operator's shell executes the decision and writes the
status once. Because the input is the whole observed world, running it twice, or after
a crash at any point, converges on the same result (level-based).
"""

from __future__ import annotations

from datetime import timedelta

from workgate.api.common import ConditionStatus
from workgate.api.waitpoint import (
    CloseReason,
    TimeoutPolicy,
    WaitpointStage,
    WaitpointState,
)
from workgate.api.wire import current_attempt
from workgate.api.workorder import (
    MAX_ERROR_LENGTH,
    TERMINAL_PHASES,
    Gate,
    GateStage,
    Phase,
)
from workgate.core.backoff import backoff_seconds, next_retry_time
from workgate.core.claims import LeaseView, Outcome, renewal_due
from workgate.core.conditions import set_condition
from workgate.core.decisions import (
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
    Event,
    Observation,
    Policy,
    ReleaseLease,
    RenewLease,
    WaitpointView,
)
from workgate.core.manifests import (
    EmbeddedObject,
    ManifestError,
    parse_build_work,
)
from workgate.core.naming import build_run_name, lease_name, waitpoint_name

# --- the machine --------------------------------------------------------------------


class _Machine:
    def __init__(self, obs: Observation, policy: Policy) -> None:
        self.obs = obs
        self.policy = policy
        self.st = obs.status.model_copy(deep=True)
        self.decision = Decision(status=self.st)
        self.local = obs.spec.work_type in policy.local_work_types

    # helpers
    def event(self, type_: str, reason: str, message: str) -> None:
        """Record an Event; a claim and its outcome in one decision make one Event (an
        agent that finished before the operator looked): Events are API writes too."""
        claimed = [e for e in self.decision.events if e.reason == "Claimed"]
        if claimed and reason != "Claimed":
            self.decision.events = [e for e in self.decision.events if e.reason != "Claimed"]
            message = f"{claimed[0].message}; {message}"
        self.decision.events.append(Event(type_, reason, message))

    def release(self) -> None:
        lease = self.obs.lease
        if lease is not None:
            self.decision.actions.append(ReleaseLease(lease))

    def clear_claim(self) -> None:
        self.st.claimed_by = None
        self.st.claimed_at = None
        self.st.lease_name = None

    def succeed(self) -> None:
        self.release()
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

    # gates
    def gates(self, stage: WaitpointStage) -> list[Gate]:
        if stage == WaitpointStage.DYNAMIC:
            # A claimant's suspension: its waitpoint is the gate, with the bar it asked for.
            key = self.st.waiting_on or ""
            view = self.obs.waitpoints.get(key)
            return (
                [
                    Gate(
                        key=key,
                        stage=GateStage.BEFORE_EXECUTION,  # placeholder: not compared for Dynamic
                        required_signal_names=list(view.required_signal_names) if view else [],
                        timeout_seconds=view.timeout_seconds if view else None,
                        on_timeout=TimeoutPolicy(view.on_timeout) if view else TimeoutPolicy.FAIL,
                    )
                ]
                if key
                else []
            )
        return [gate for gate in self.obs.spec.gates if str(gate.stage) == str(stage)]

    def ensure_waitpoints(self) -> None:
        if self.obs.name_taken:
            return
        for gate in self.obs.spec.gates:
            if gate.key not in self.obs.waitpoints:
                name = waitpoint_name(self.obs.name, gate.key)
                self.decision.actions.append(CreateWaitpoint(name, gate))

    def wait_at(self, stage: WaitpointStage) -> None:
        self.st.phase = Phase.WAITING
        self.st.waiting_stage = stage
        self.st.waiting_on = ",".join(gate.key for gate in self.gates(stage))
        self.event("Normal", "Waiting", f"waiting at {stage} gates: {self.st.waiting_on}")
        self.waiting()

    def waiting(self) -> None:
        """Activate this stage's gates; move on once all are closed."""
        stage = WaitpointStage(self.st.waiting_stage or WaitpointStage.BEFORE_EXECUTION)
        open_keys = []
        for gate in self.gates(stage):
            view = self.obs.waitpoints.get(gate.key)
            if view is not None and stage != WaitpointStage.DYNAMIC and not view.matches(gate):
                self.fail(
                    "WaitpointConflict",
                    f"waitpoint {view.name} does not match gate {gate.key} as declared",
                    retryable=False,
                )
                return
            if view is None or view.state is None:
                open_keys.append(gate.key)  # token not minted yet: the Waitpoint's event wakes us
            elif view.state == WaitpointState.PENDING:
                self.decision.actions.append(ActivateWaitpoint(view, gate.timeout_seconds))
                open_keys.append(gate.key)
            elif view.state == WaitpointState.ACTIVE:
                open_keys.append(gate.key)
            elif view.close_reason == CloseReason.REJECTED:
                self.reject(gate.key, view)
                return
            elif view.close_reason == CloseReason.CANCELLED or (
                view.close_reason == CloseReason.EXPIRED and gate.on_timeout == TimeoutPolicy.FAIL
            ):
                reason = f"Waitpoint{view.close_reason}"
                self.fail(reason, f"gate {gate.key} closed as {view.close_reason}", retryable=False)
                return
        if open_keys:
            self.st.waiting_on = ",".join(open_keys)
            return
        self.st.waiting_on = None
        self.event("Normal", "GatesPassed", f"{stage} gates passed")
        if stage == WaitpointStage.AFTER_SUCCESS:
            self.complete()
        else:  # before execution, or a suspended attempt: claimable (again)
            self.st.phase = Phase.PENDING

    def reject(self, key: str, view: WaitpointView) -> None:
        """A reviewer rejected the gate: the WorkOrder fails, recording who, when and why."""
        self.st.rejection = view.rejection
        who = f" by {view.rejection.by}" if view.rejection else ""
        why = f": {view.rejection.payload}" if view.rejection and view.rejection.payload else ""
        self.fail("Rejected", f"gate {key} was rejected{who}{why}", retryable=False)

    def cancel_open_waitpoints(self) -> None:
        for view in self.obs.waitpoints.values():
            if view.state in (WaitpointState.PENDING, WaitpointState.ACTIVE):
                self.decision.actions.append(CancelWaitpoint(view))

    def fail(self, reason: str, message: str, *, retryable: bool) -> None:
        now = self.obs.now
        self.cancel_running_build()
        self.release()
        self.clear_claim()
        self.st.last_error = message[:MAX_ERROR_LENGTH]
        self.st.last_error_reason = reason
        self.st.last_error_at = now
        spec = self.obs.spec
        if retryable and self.st.retry_count < spec.max_retries:
            delay = backoff_seconds(
                spec.backoff_seconds,
                self.st.retry_count,
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
                f"{self.st.retry_count}/{spec.max_retries} in {delay:g}s",
            )
        else:
            self.st.phase = Phase.FAILED
            self.st.completed_at = now
            self.st.next_retry_after = None
            why = "" if retryable else " (not retryable)"
            self.event("Warning", reason, f"failed{why}: {message[:512]}")

    def cancel_running_build(self) -> None:
        """A local attempt that ends unfinished must not keep building beside its retry."""
        run = self.obs.build_run
        if (
            self.local
            and self.st.phase == Phase.CLAIMED
            and run is not None
            and run.name == build_run_name(self.obs.name, self.st.attempt)
            and run.succeeded not in (ConditionStatus.TRUE, ConditionStatus.FALSE)
            and not run.cancelled
        ):
            self.decision.actions.append(CancelBuildRun(run.name))

    def build_work(self) -> tuple[list[EmbeddedObject], EmbeddedObject] | None:
        try:
            return parse_build_work(
                self.obs.spec.yaml_content,
                namespace=self.obs.namespace,
                allowed_kinds=self.policy.allowed_kinds,
            )
        except ManifestError as exc:
            self.fail(exc.reason, exc.message, retryable=False)
            return None

    # phases
    def run(self) -> Decision:
        if self.st.phase in TERMINAL_PHASES:
            self.release()  # a claim left over from a crash between status write and release
            self.cancel_open_waitpoints()
            return self.finish()
        self.ensure_waitpoints()
        if self.st.phase is None:
            self.st.phase = Phase.PENDING  # no Event: the status says it, the claim follows
            if self.local and self.build_work() is None:
                return self.finish()
            if self.gates(WaitpointStage.BEFORE_EXECUTION):
                self.wait_at(WaitpointStage.BEFORE_EXECUTION)
        elif self.st.phase == Phase.WAITING:
            self.waiting()
        if self.st.phase == Phase.RETRY_PENDING:
            self.retry_pending()
        if self.st.phase == Phase.PENDING:
            self.pending()
        if self.st.phase == Phase.CLAIMED:
            self.claimed()
        if self.st.phase in TERMINAL_PHASES:
            self.cancel_open_waitpoints()
        return self.finish()

    def retry_pending(self) -> None:
        due = self.st.next_retry_after
        if due is not None and self.obs.now < due:
            lease = self.obs.lease
            if lease is not None:  # claimed before its time: not this attempt's claim
                self.decision.actions.append(ReleaseLease(lease))
            self.decision.wake_at(due)
            return
        self.st.phase = Phase.PENDING
        self.st.next_retry_after = None
        self.event("Normal", "Requeued", f"retry {self.st.retry_count} is due")

    def pending(self) -> None:
        attempt = current_attempt(self.st.retry_count)
        lease = self.obs.lease
        if lease is not None:
            if lease.attempt == attempt:  # claimed; CLAIMED handles its outcome or staleness
                self.take_claim(lease.holder or "unknown", lease)
                return
            self.decision.actions.append(ReleaseLease(lease))  # left over from an old attempt
            self.decision.wake_at(self.obs.now)
            return
        if not self.local:
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
        who = lease.claimant if lease else holder
        self.event("Normal", "Claimed", f"attempt {self.st.attempt} claimed by {who}")

    def claimed(self) -> None:
        lease = self.obs.lease
        if lease is not None and lease.attempt != self.st.attempt:
            lease = None  # some other attempt's Lease does not hold this one
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
            )
        elif lease.is_stale(self.obs.now):
            self.fail_timed_out(lease)
        else:
            if lease.holder and lease.holder != self.st.claimed_by:
                self.st.claimed_by = lease.holder
            self.decision.wake_at(lease.expires_at)

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

    def claimed_locally(self, lease: LeaseView | None) -> None:
        attempt = self.st.attempt
        run_name = build_run_name(self.obs.name, attempt)
        self.st.build_run_name = run_name
        run = (
            self.obs.build_run
            if self.obs.build_run and self.obs.build_run.name == run_name
            else None
        )
        if run is not None and run.succeeded == ConditionStatus.TRUE:
            self.succeed()
            return
        if run is not None and run.succeeded == ConditionStatus.FALSE:
            reason = run.reason or "BuildRunFailed"
            self.fail(
                reason,
                f"BuildRun {run_name}: {run.message or reason}",
                retryable=reason not in PERMANENT_BUILD_RUN_REASONS,
            )
            return
        if self.obs.action_error is not None:
            reason, message, retryable = self.obs.action_error
            self.fail(reason, message, retryable=retryable)
            return
        if self.obs.name_taken:
            return  # finish() reports it; nothing is created until the name is free
        claiming_now = any(isinstance(a, ClaimLease) for a in self.decision.actions)
        if lease is None and not claiming_now:
            # Our own claim vanished (deleted by hand, or lost in a crash): take it again.
            self.decision.actions.append(
                ClaimLease(
                    lease_name(self.obs.name),
                    attempt,
                    self.policy.identity,
                    self.obs.spec.claim_timeout_seconds,
                )
            )
        elif lease is not None:
            if lease.is_stale(self.obs.now) and lease.holder != self.policy.identity:
                self.fail_timed_out(lease)
                return
            # Our own claim, even gone stale while the operator was down: re-adopt it
            # (renew) rather than time our own attempt out; its BuildRun may be running.
            due = renewal_due(lease, self.obs.now)
            if due is not None and due <= self.obs.now:
                self.decision.actions.append(RenewLease(lease))
            else:
                self.decision.wake_at(due)
        if run is None:
            work = self.build_work()
            if work is None:
                return
            objects, build = work
            self.decision.actions.append(ApplyObjects(tuple(objects)))
            self.decision.actions.append(CreateBuildRun(run_name, build.name, attempt))

    # conditions, from the phase the machine ended in
    def finish(self) -> Decision:
        st, gen, now = self.st, self.obs.generation, self.obs.now
        phase = Phase(st.phase) if st.phase else Phase.PENDING
        reason = {
            Phase.PENDING: "Queued",
            Phase.CLAIMED: "Claimed",
            Phase.RETRY_PENDING: "RetryPending",
            Phase.WAITING: "Waiting",
            Phase.SUCCEEDED: "Succeeded",
            Phase.FAILED: st.last_error_reason or "Failed",
        }[phase]
        message = {
            Phase.PENDING: f"waiting for a claimant of {self.obs.spec.work_type} work",
            Phase.CLAIMED: f"attempt {st.attempt} held by {st.claimed_by}",
            Phase.RETRY_PENDING: f"retry {st.retry_count} after {st.next_retry_after}",
            Phase.WAITING: f"waiting at gates {st.waiting_on} ({st.waiting_stage})",
            Phase.SUCCEEDED: f"succeeded on attempt {st.attempt}",
            Phase.FAILED: st.last_error or "failed",
        }[phase]
        T, F, U = ConditionStatus.TRUE, ConditionStatus.FALSE, ConditionStatus.UNKNOWN
        # kstatus reads Ready/Reconciling/Stalled; `kubectl wait` users read Succeeded.
        wanted = {
            "Succeeded": {Phase.SUCCEEDED: T, Phase.FAILED: F}.get(phase, U),
            "Ready": T if phase == Phase.SUCCEEDED else F,
            "Reconciling": F if phase in TERMINAL_PHASES else T,
            "Stalled": T if phase == Phase.FAILED else F,
            "Claimed": T if phase == Phase.CLAIMED else F,
        }
        blocked = self.obs.name_taken if phase not in TERMINAL_PHASES else None
        conds = st.conditions
        for type_, value in wanted.items():
            if type_ == "Stalled" and blocked:
                conds = set_condition(
                    conds, type_, T, "NameTaken", blocked, generation=gen, now=now
                )
                continue
            conds = set_condition(conds, type_, value, reason, message, generation=gen, now=now)
        if blocked:
            already = any(
                c.type == "Stalled" and c.status == T and c.reason == "NameTaken"
                for c in self.obs.status.conditions
            )
            if not already:
                self.event("Warning", "NameTaken", blocked)
            self.decision.wake_at(self.obs.now + timedelta(seconds=NAME_TAKEN_RETRY_SECONDS))
        st.conditions = conds
        st.observed_generation = gen
        return self.decision


def decide(obs: Observation, policy: Policy) -> Decision:
    return _Machine(obs, policy).run()


__all__ = [
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
    "Event",
    "Observation",
    "Policy",
    "ReleaseLease",
    "RenewLease",
    "WaitpointView",
    "decide",
]
