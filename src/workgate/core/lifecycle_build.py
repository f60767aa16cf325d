"""The build rules of the WorkOrder state machine: the operator's own attempts, run as one
Shipwright BuildRun each.

A mixin of `core.lifecycle._Machine` (it shares the machine's state: `obs`, `policy`, `st`,
`decision`, `local`); split out so each part reads in one sitting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workgate.api.common import ConditionStatus
from workgate.api.workorder import Phase, WorkOrderStatus
from workgate.core.claims import LeaseView, renewal_due
from workgate.core.decisions import (
    BUILD_NOT_SEEN,
    PERMANENT_BUILD_RUN_REASONS,
    ApplyObjects,
    BuildRunView,
    CancelBuildRun,
    ClaimLease,
    CreateBuildRun,
    Decision,
    Observation,
    Policy,
    RecreateBuildRun,
    RenewLease,
)
from workgate.core.manifests import EmbeddedObject, ManifestError, parse_build_work
from workgate.core.naming import build_run_name, lease_name


class BuildRules:
    obs: Observation
    policy: Policy
    st: WorkOrderStatus
    decision: Decision
    local: bool

    if TYPE_CHECKING:  # provided by the machine

        def event(self, type_: str, reason: str, message: str) -> None: ...
        def fail(self, reason: str, message: str, *, retryable: bool) -> None: ...
        def succeed(self) -> None: ...
        def fail_timed_out(self, lease: LeaseView) -> None: ...
        def hold_first_status(self, lease: LeaseView | None, claiming_now: bool) -> None: ...

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
        never_ran = run is not None and _failed_before_it_ran(run)
        if run is not None and run.succeeded == ConditionStatus.FALSE and not never_ran:
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
        if not never_ran:
            self.hold_first_status(lease, claiming_now)
        if run is None or never_ran:
            work = self.build_work()
            if work is None:
                return
            objects, build = work
            self.decision.actions.append(ApplyObjects(tuple(objects)))
            if run is None:
                self.decision.actions.append(CreateBuildRun(run_name, build.name, attempt))
                return
            self.event(
                "Normal",
                "BuildRunRecreated",
                f"BuildRun {run_name} failed before it ran ({run.message or run.reason}): "
                "Shipwright had not yet seen the Build; creating it again",
            )
            self.decision.actions.append(RecreateBuildRun(run_name, run.uid, build.name, attempt))


def _failed_before_it_ran(run: BuildRunView) -> bool:
    """Shipwright failed the attempt's first BuildRun on a Build its cache had not seen."""
    return (
        run.succeeded == ConditionStatus.FALSE
        and run.reason == BUILD_NOT_SEEN
        and not run.recreated
        and not run.cancelled
    )
