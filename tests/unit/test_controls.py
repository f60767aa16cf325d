"""Work controls in the pure core: cancel, suspend, rerun, TTL, deadlines, failure policy,
queues; and the claim rules they add (revocation)."""

from dataclasses import replace
from datetime import timedelta

from tests.unit.samples import NOW, POLICY
from tests.unit.test_lifecycle import kinds, lease, observe, wp
from workgate.api.common import ConditionStatus
from workgate.api.workorder import Phase, WorkOrderStatus
from workgate.core import claims, controls
from workgate.core import lifecycle as lc
from workgate.core.claims import Outcome
from workgate.core.conditions import get_condition
from workgate.core.controls import QueueEntry, admit

CLAIMED = WorkOrderStatus(phase=Phase.CLAIMED, attempt=1, claimed_by="agent-1", claimed_at=NOW)


def condition(d: lc.Decision, type_: str) -> ConditionStatus | None:
    found = get_condition(d.status.conditions, type_)
    return found.status if found else None


def test_cancel_revokes_an_agents_live_claim_and_ends_cancelled() -> None:
    d = lc.decide(
        observe(CLAIMED, work_type="test", spec_kw={"cancel": True}, lease=lease()), POLICY
    )
    assert d.status.phase == Phase.CANCELLED and d.status.completed_at == NOW
    assert kinds(d) == ["RevokeLease"]
    assert condition(d, "Cancelled") == ConditionStatus.TRUE
    assert condition(d, "Succeeded") == ConditionStatus.FALSE
    # while the agent stops, the revoked Lease is kept (not deleted under it)
    revoked = replace(lease(), revoked="Cancelled")
    again = lc.decide(
        observe(d.status, work_type="test", spec_kw={"cancel": True}, lease=revoked), POLICY
    )
    assert kinds(again) == [] and again.requeue_at == NOW + timedelta(seconds=30)


def test_cancel_of_a_running_build_cancels_its_build_run_and_releases_the_claim() -> None:
    claimed = WorkOrderStatus(phase=Phase.CLAIMED, attempt=1, claimed_by="op", claimed_at=NOW)
    d = lc.decide(
        observe(
            claimed,
            spec_kw={"cancel": True},
            lease=lease(holder="op"),
            build_run=lc.BuildRunView("wo1-a1", ConditionStatus.UNKNOWN),
        ),
        POLICY,
    )
    assert d.status.phase == Phase.CANCELLED
    assert kinds(d) == ["CancelBuildRun", "ReleaseLease"]


def test_cancel_at_a_gate_closes_its_waitpoints() -> None:
    waiting = WorkOrderStatus(phase=Phase.WAITING, waiting_stage="BeforeExecution")
    d = lc.decide(
        observe(
            waiting,
            work_type="test",
            spec_kw={
                "cancel": True,
                "gates": [
                    {"key": "approve", "stage": "BeforeExecution", "requiredSignalNames": ["ok"]}
                ],
            },
            waitpoints={"approve": wp("approve", "active")},
        ),
        POLICY,
    )
    assert d.status.phase == Phase.CANCELLED and kinds(d) == ["CancelWaitpoint"]


def test_suspend_holds_pending_work_and_resume_releases_it() -> None:
    d = lc.decide(observe(work_type="test", spec_kw={"suspend": True}), POLICY)
    assert d.status.phase == Phase.SUSPENDED and kinds(d) == []
    assert condition(d, "Suspended") == ConditionStatus.TRUE
    resumed = lc.decide(observe(d.status, work_type="test"), POLICY)
    assert resumed.status.phase == Phase.PENDING
    assert condition(resumed, "Suspended") == ConditionStatus.FALSE
    # the operator's own build work is not claimed while suspended either
    build = lc.decide(observe(spec_kw={"suspend": True}), POLICY)
    assert build.status.phase == Phase.SUSPENDED and kinds(build) == []


def test_suspend_lets_a_running_attempt_finish_and_holds_its_retry() -> None:
    spec = {"suspend": True}
    running = lc.decide(observe(CLAIMED, work_type="test", spec_kw=spec, lease=lease()), POLICY)
    assert running.status.phase == Phase.CLAIMED and kinds(running) == []
    assert condition(running, "Suspended") == ConditionStatus.FALSE
    failed = lc.decide(
        observe(CLAIMED, work_type="test", spec_kw=spec, lease=lease(outcome=Outcome.FAILED)),
        POLICY,
    )
    assert failed.status.phase == Phase.RETRY_PENDING
    due = failed.status.next_retry_after
    assert due is not None
    later = lc.decide(observe(failed.status, work_type="test", spec_kw=spec, now=due), POLICY)
    assert later.status.phase == Phase.SUSPENDED


def test_rerun_starts_a_failed_work_order_over_with_a_fresh_budget_and_history() -> None:
    failed = WorkOrderStatus(
        phase=Phase.FAILED,
        attempt=3,
        retry_count=2,
        last_error="boom",
        last_error_reason="CommandFailed",
        completed_at=NOW,
    )
    old = lease(attempt=3, outcome=Outcome.FAILED)
    d = lc.decide(observe(failed, work_type="test", rerun="r1", lease=old), POLICY)
    st = d.status
    assert st.phase == Phase.PENDING and st.retry_count == 3 and st.retry_base == 3
    assert st.rerun == "r1" and st.completed_at is None and st.last_error is None
    assert [(h.first_attempt, h.last_attempt, h.reason) for h in st.history] == [
        (1, 3, "CommandFailed")
    ]
    assert kinds(d) == ["ReleaseLease"]  # the old attempt's Lease makes room for attempt 4
    claimed = lc.decide(observe(st, work_type="test", rerun="r1", lease=lease(attempt=4)), POLICY)
    assert claimed.status.phase == Phase.CLAIMED and claimed.status.attempt == 4
    # the same request is answered once; a fresh budget of maxRetries (2) retries
    assert (
        lc.decide(
            observe(failed.model_copy(update={"rerun": "r1"}), work_type="test", rerun="r1"), POLICY
        ).status.phase
        == Phase.FAILED
    )
    again = lc.decide(
        observe(
            claimed.status,
            work_type="test",
            rerun="r1",
            lease=lease(attempt=4, outcome=Outcome.FAILED),
        ),
        POLICY,
    )
    assert again.status.phase == Phase.RETRY_PENDING and again.status.retry_count == 4


def test_rerun_reopens_rejected_gates_but_keeps_passed_ones() -> None:
    gates = [
        {"key": "approve", "stage": "BeforeExecution", "requiredSignalNames": ["ok"]},
        {"key": "verify", "stage": "AfterSuccess", "timeoutSeconds": 5, "onTimeout": "Continue"},
    ]
    failed = WorkOrderStatus(phase=Phase.FAILED, attempt=1, completed_at=NOW)
    d = lc.decide(
        observe(
            failed,
            work_type="test",
            rerun="r1",
            spec_kw={"gates": gates},
            waitpoints={
                "approve": wp("approve", "closed", "Satisfied"),
                "verify": wp("verify", "closed", "Rejected"),
            },
        ),
        POLICY,
    )
    assert kinds(d) == ["DeleteWaitpoint", "CreateWaitpoint"]
    assert d.status.phase == Phase.PENDING  # approve passed and stays passed


def test_ttl_deletes_a_finished_work_order_when_due() -> None:
    done = WorkOrderStatus(phase=Phase.SUCCEEDED, attempt=1, completed_at=NOW)
    early = lc.decide(observe(done, spec_kw={"ttlSecondsAfterFinished": 60}), POLICY)
    assert kinds(early) == [] and early.requeue_at == NOW + timedelta(seconds=60)
    due = lc.decide(
        observe(done, spec_kw={"ttlSecondsAfterFinished": 60}, now=NOW + timedelta(seconds=60)),
        POLICY,
    )
    assert kinds(due) == ["DeleteWorkOrder"]
    default = replace(POLICY, default_ttl_seconds=0)
    assert kinds(lc.decide(observe(done), default)) == ["DeleteWorkOrder"]
    assert kinds(lc.decide(observe(done), POLICY)) == []


def test_attempt_deadline_stops_a_hanging_attempt_and_retries_it() -> None:
    spec = {"attemptDeadlineSeconds": 20}
    later = NOW + timedelta(seconds=20)
    live = lease(renewed=later - timedelta(seconds=1))
    d = lc.decide(observe(CLAIMED, work_type="test", spec_kw=spec, lease=live, now=later), POLICY)
    assert d.status.phase == Phase.RETRY_PENDING
    assert d.status.last_error_reason == controls.ATTEMPT_DEADLINE_EXCEEDED
    assert kinds(d) == ["RevokeLease"]
    early = lc.decide(observe(CLAIMED, work_type="test", spec_kw=spec, lease=lease()), POLICY)
    assert early.status.phase == Phase.CLAIMED and early.requeue_at == later


def test_active_deadline_fails_a_work_order_waiting_at_a_gate() -> None:
    gates = [{"key": "approve", "stage": "BeforeExecution", "requiredSignalNames": ["ok"]}]
    waiting = WorkOrderStatus(
        phase=Phase.WAITING, waiting_stage="BeforeExecution", waiting_on="approve", start_time=NOW
    )
    spec = {"activeDeadlineSeconds": 30, "gates": gates}
    d = lc.decide(
        observe(
            waiting,
            work_type="test",
            spec_kw=spec,
            waitpoints={"approve": wp("approve", "active")},
            now=NOW + timedelta(seconds=30),
        ),
        POLICY,
    )
    assert d.status.phase == Phase.FAILED
    assert d.status.last_error_reason == controls.DEADLINE_EXCEEDED
    assert kinds(d) == ["CancelWaitpoint"]


def test_failure_policy_ends_the_work_order_on_a_declared_exit_code() -> None:
    policy = {
        "rules": [{"action": "FailWorkOrder", "onExitCodes": {"operator": "In", "values": [3]}}]
    }
    failed = replace(lease(outcome=Outcome.FAILED), exit_code=3, error_reason="CommandFailed")
    d = lc.decide(
        observe(CLAIMED, work_type="test", spec_kw={"failurePolicy": policy}, lease=failed),
        POLICY,
    )
    assert d.status.phase == Phase.FAILED and d.status.retry_count == 0
    other = replace(failed, exit_code=1)
    d = lc.decide(
        observe(CLAIMED, work_type="test", spec_kw={"failurePolicy": policy}, lease=other),
        POLICY,
    )
    assert d.status.phase == Phase.RETRY_PENDING


def test_failure_policy_rules_match_in_order() -> None:
    from workgate.api.workorder import FailureAction, FailurePolicy

    policy = FailurePolicy.model_validate(
        {
            "rules": [
                {"action": "Retry", "onExitCodes": {"operator": "In", "values": [1]}},
                {"action": "FailWorkOrder", "onExitCodes": {"operator": "NotIn", "values": [0]}},
                {"action": "FailWorkOrder", "onReasons": ["BuildRunTimeout"]},
            ]
        }
    )
    assert controls.failure_action(policy, "CommandFailed", 1) == FailureAction.RETRY
    assert controls.failure_action(policy, "CommandFailed", 2) == FailureAction.FAIL_WORK_ORDER
    assert controls.failure_action(policy, "BuildRunTimeout", None) == FailureAction.FAIL_WORK_ORDER
    assert controls.failure_action(policy, "Other", None) == FailureAction.RETRY
    assert controls.failure_action(None, "Other", 2) == FailureAction.RETRY


def test_queue_admits_by_priority_then_age_up_to_the_limit() -> None:
    def entry(name: str, priority: int, created: str, active: bool = False) -> QueueEntry:
        return QueueEntry(("ns", name), priority, created, active, not active)

    views = admit(
        [
            entry("running", 0, "1", active=True),
            entry("old-low", 0, "2"),
            entry("new-high", 5, "9"),
            entry("new-low", 0, "8"),
        ],
        limit=2,
    )
    assert views[("ns", "running")].admitted and views[("ns", "new-high")].admitted
    assert not views[("ns", "old-low")].admitted and views[("ns", "old-low")].position == 1
    assert views[("ns", "new-low")].position == 2 and views[("ns", "new-low")].active == 1


def test_a_work_order_over_its_types_limit_is_queued_with_its_position() -> None:
    full = controls.QueueView(limit=2, active=2, admitted=False, position=3)
    d = lc.decide(observe(work_type="test", queue=full), POLICY)
    assert d.status.phase == Phase.QUEUED and d.status.queue is not None
    assert d.status.queue.position == 3 and d.status.queue.reason == "ConcurrencyLimit"
    free = controls.QueueView(limit=2, active=1, admitted=True, position=0)
    d = lc.decide(observe(d.status, work_type="test", queue=free), POLICY)
    assert d.status.phase == Phase.PENDING and d.status.queue is None


def test_a_revoked_claim_can_only_be_released_by_its_holder() -> None:
    old = replace(lease(), revoked="Cancelled")
    renewed = replace(old, renew_time=NOW + timedelta(seconds=5))
    assert claims.judge_claim_update(old, renewed, "agent-1", "op", True) is not None
    assert claims.judge_claim_update(old, renewed, "op", "op", True) is None
    unrevoke = replace(old, revoked=None)
    assert claims.judge_claim_update(old, unrevoke, "agent-1", "op", True) is not None
    assert claims.judge_claim_update(lease(), old, "agent-1", "op", True) is not None
    assert claims.judge_claim_delete(old, "agent-1", (), "op") is None


def test_a_claim_past_the_limit_is_revoked_and_its_attempt_is_not_run_again() -> None:
    full = controls.QueueView(limit=1, active=1, admitted=False, position=1)
    d = lc.decide(observe(work_type="test", queue=full, lease=lease()), POLICY)
    assert d.status.phase == Phase.QUEUED and kinds(d) == ["RevokeLease"]
    # Its command may have started: attempt 1 is spent, the next claim runs attempt 2,
    # and that is no retry (maxRetries counts from retryBase).
    assert (d.status.retry_count, d.status.retry_base) == (1, 1)
    assert [e.reason for e in d.events] == ["Queued", "ClaimRevoked"]
    assert d.events[-1].message.endswith("the next claim runs attempt 2")
    # a claimant-written holder of any length still leaves that said (Events keep 1024)
    long = replace(lease(), holder="x" * 5000)
    d = lc.decide(observe(work_type="test", queue=full, lease=long), POLICY)
    assert len(d.events[-1].message) < 1024 and "attempt 2" in d.events[-1].message
    # once the claimant released it and a slot is free, it is claimable again
    free = controls.QueueView(limit=1, active=0, admitted=True, position=0)
    revoked = replace(lease(), revoked="ConcurrencyLimit")
    waiting = lc.decide(observe(d.status, work_type="test", queue=free, lease=revoked), POLICY)
    assert waiting.status.phase == Phase.QUEUED and kinds(waiting) == []
    open_again = lc.decide(observe(d.status, work_type="test", queue=free), POLICY)
    assert open_again.status.phase == Phase.PENDING
    claim = replace(lease(), attempt=2, uid="lease-2")
    running = lc.decide(
        observe(open_again.status, work_type="test", queue=free, lease=claim), POLICY
    )
    assert running.status.phase == Phase.CLAIMED and running.status.attempt == 2


def test_a_claim_past_the_limit_that_already_reported_keeps_its_outcome() -> None:
    """Its command ran to its end before the operator looked: running it again would not
    undo that, so the outcome counts (the limit was exceeded once, not twice)."""
    full = controls.QueueView(limit=1, active=1, admitted=False, position=1)
    done = replace(lease(), outcome=Outcome.SUCCEEDED)
    d = lc.decide(observe(work_type="test", queue=full, lease=done), POLICY)
    assert d.status.phase == Phase.SUCCEEDED and d.status.attempt == 1
    assert d.status.retry_count == 0 and "RevokeLease" not in kinds(d)


def test_a_live_claim_on_a_spent_attempt_is_revoked_not_deleted() -> None:
    """The status spent attempt 1, but its revocation did not land (the operator stopped
    in between): the agent still working on it is told to stop, and nothing is claimed
    beside it until it has."""
    full = controls.QueueView(limit=1, active=1, admitted=False, position=1)
    spent = lc.decide(observe(work_type="test", queue=full, lease=lease()), POLICY).status
    free = controls.QueueView(limit=1, active=0, admitted=True, position=0)
    d = lc.decide(observe(spent, work_type="test", queue=free, lease=lease()), POLICY)
    assert kinds(d) == ["RevokeLease"] and d.status.phase == Phase.QUEUED
    stale = lc.decide(
        observe(spent, work_type="test", queue=free, lease=lease(), now=NOW + timedelta(hours=1)),
        POLICY,
    )
    assert kinds(stale) == ["ReleaseLease"]  # stale: fencing stopped its work long ago


def test_a_blocked_work_order_keeps_its_stalled_condition_unchanged_between_looks() -> None:
    first = lc.decide(observe(work_type="test", name_taken="Lease wo1-claim is taken"), POLICY)
    again = lc.decide(
        observe(
            first.status,
            work_type="test",
            name_taken="Lease wo1-claim is taken",
            now=NOW + timedelta(seconds=5),
        ),
        POLICY,
    )
    assert again.status == first.status  # nothing to write: no hot loop


def test_cancel_revokes_a_claim_the_operator_has_not_recorded_yet() -> None:
    # the agent claimed (attempt 1) before the operator's first look; status says nothing
    d = lc.decide(observe(work_type="test", spec_kw={"cancel": True}, lease=lease()), POLICY)
    assert d.status.phase == Phase.CANCELLED and kinds(d) == ["RevokeLease"]


def test_an_agents_claim_is_revoked_even_when_the_agent_is_the_operators_user() -> None:
    mine = lease(holder="op")  # an agent run with the operator's credentials
    d = lc.decide(observe(CLAIMED, work_type="test", spec_kw={"cancel": True}, lease=mine), POLICY)
    assert kinds(d) == ["RevokeLease"]
