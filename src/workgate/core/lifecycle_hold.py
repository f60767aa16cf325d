"""When a claim's first status may wait: the hold rules of the WorkOrder state machine.

A WorkOrder status write costs the API server more than anything else an attempt does
(bench/request_cost.py). So a claim that no status records yet may stay unrecorded for
`Policy.status_batch_seconds` after it was made: an attempt that ends by then goes from
no status (or PENDING) to its outcome in one write, as the Job controller batches its
syncs. The claim is in the Lease meanwhile, where cancel and deadlines find it (they end
a claim whether or not status records it), and where other agents see it. Likewise an
agent's WorkOrder that no one has claimed yet: the API server shows it PENDING (the CRD's
default), and the operator's own record of that waits `Policy.pending_status_seconds`.

A held decision carries no Event either: the Claimed Event comes with the status it
announces (merged with the outcome's, if that came first); a decision with any other
Event is written at once, so that no Event repeats while its status waits.

A mixin of `core.lifecycle._Machine` (it shares the machine's state: `obs`, `policy`,
`st`, `decision`, `local`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from workgate.api.workorder import Phase, WorkOrderStatus
from workgate.core.claims import LeaseView
from workgate.core.decisions import CLAIMED_EVENT, ENDS_A_CLAIM, Decision, Observation, Policy

UNRECORDED = (None, Phase.PENDING)  # the phases of a WorkOrder whose claim is not in status


class HoldRules:
    obs: Observation
    policy: Policy
    st: WorkOrderStatus
    decision: Decision
    local: bool

    if TYPE_CHECKING:  # provided by the machine

        def unrecorded_claim(self, lease: LeaseView | None) -> bool: ...

    def hold_status(self, claimed: datetime, seconds: float | None = None) -> None:
        """Let this decision's status wait until `seconds` (`status_batch_seconds` unless
        given) after `claimed`, if that is still ahead (a claim dated ahead of the clock is
        written at once)."""
        if seconds is None:
            seconds = self.policy.status_batch_seconds
        until = claimed + timedelta(seconds=seconds)
        if not claimed <= self.obs.now < until:
            return
        if any(event.reason != CLAIMED_EVENT for event in self.decision.events):
            return
        if any(isinstance(a, ENDS_A_CLAIM) for a in self.decision.actions):
            return  # a claim is ended only after status records why
        self.decision.events = []
        self.decision.status_may_wait_until = until
        self.decision.wake_at(until)

    def hold_first_status(self, lease: LeaseView | None, claiming_now: bool) -> None:
        """A build claimed (or adopted) before any status was written, its BuildRun not yet
        done."""
        if self.obs.status.phase is not None:
            return
        if claiming_now and self.policy.limit_for(self.obs.spec.work_type) is None:
            self.hold_status(self.obs.now)
        elif self.unrecorded_claim(lease) and lease is not None:
            self.hold_status(lease.acquire_time or self.obs.now)

    def hold_unclaimed(self) -> None:
        """An agent's WorkOrder that no status records yet and no one has claimed. The API
        server shows it PENDING from its creation on (the CRD's default), so the
        operator's own record of it (conditions, startTime) waits
        `pending_status_seconds` from its creation: agents usually claim it before, and
        the claim and its outcome are then one write, where a backlog would otherwise cost
        one more status write per queued WorkOrder. Not for a work type with a
        concurrency limit (its slots are counted from status), nor with
        activeDeadlineSeconds (its clock starts at startTime)."""
        if (
            self.obs.status.phase is None
            and self.st.phase == Phase.PENDING
            and self.obs.lease is None
            and self.obs.created is not None
            and self.obs.spec.active_deadline_seconds is None
            and self.policy.limit_for(self.obs.spec.work_type) is None
        ):
            self.hold_status(self.obs.created, self.policy.pending_status_seconds)

    def hold_agents_claim(self, lease: LeaseView) -> None:
        """An agent's live claim on the current attempt, with no outcome yet, that status
        does not record (a work type without a concurrency limit: a limited type's slots
        are counted from status)."""
        if (
            self.obs.status.phase in UNRECORDED
            and lease.outcome is None
            and lease.revoked is None
            and lease.acquire_time is not None
            and self.policy.limit_for(self.obs.spec.work_type) is None
        ):
            self.hold_status(lease.acquire_time)
