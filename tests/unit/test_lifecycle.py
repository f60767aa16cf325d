"""The WorkOrder state machine, without a cluster."""

from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from tests.unit.samples import BUILD, NOW, POLICY
from workgate.api.common import ConditionStatus
from workgate.api.workorder import Phase, WorkOrderSpec, WorkOrderStatus
from workgate.core import lifecycle as lc
from workgate.core.claims import LeaseView, Outcome
from workgate.core.conditions import get_condition


def observe(
    status: WorkOrderStatus | None = None,
    *,
    work_type: str = "build",
    now: datetime = NOW,
    yaml: str = BUILD,
    spec_kw: dict[str, object] | None = None,
    **kw: object,
) -> lc.Observation:
    spec = WorkOrderSpec.model_validate(
        {
            "work_type": work_type,
            "yaml_content": yaml,
            "max_retries": 2,
            "backoff_seconds": 10,
            "claim_timeout_seconds": 30,
            **(spec_kw or {}),
        }
    )
    return lc.Observation(
        now=now,
        name="wo1",
        namespace="ns",
        generation=1,
        spec=spec,
        status=status or WorkOrderStatus(),
        **kw,
    )  # type: ignore[arg-type]


def lease(
    attempt: int = 1,
    *,
    renewed: datetime = NOW,
    outcome: Outcome | None = None,
    holder: str = "agent-1",
    error: str | None = None,
) -> LeaseView:
    return LeaseView(
        name="wo1-claim",
        holder=holder,
        attempt=attempt,
        acquire_time=renewed,
        renew_time=renewed,
        duration_seconds=30,
        resource_version="7",
        uid="u",
        outcome=outcome,
        error=error,
    )


def kinds(decision: lc.Decision) -> list[str]:
    return [type(a).__name__ for a in decision.actions]


def test_new_build_work_is_claimed_and_started_in_one_decision() -> None:
    d = lc.decide(observe(), POLICY)
    assert d.status.phase == Phase.CLAIMED and d.status.attempt == 1
    assert d.status.claimed_by == "op"
    assert kinds(d) == ["ClaimLease", "ApplyObjects", "CreateBuildRun"]
    run = d.actions[2]
    assert isinstance(run, lc.CreateBuildRun) and run.name == "wo1-a1" and run.build_name == "hello"
    assert get_condition(d.status.conditions, "Succeeded").status == ConditionStatus.UNKNOWN  # type: ignore[union-attr]
    assert d.status.observed_generation == 1


def test_deciding_again_on_the_result_changes_nothing() -> None:
    first = lc.decide(observe(), POLICY)
    again = lc.decide(
        observe(
            first.status,
            lease=lease(holder="op"),
            build_run=lc.BuildRunView("wo1-a1", ConditionStatus.UNKNOWN),
        ),
        POLICY,
    )
    assert again.status == first.status
    assert again.actions == [] and again.events == []
    assert again.requeue_at == NOW + timedelta(seconds=10)  # renewal after a third of 30 s


def test_restart_after_claim_before_status_write_adopts_the_claim() -> None:
    d = lc.decide(observe(WorkOrderStatus(phase=Phase.PENDING), lease=lease(holder="op")), POLICY)
    assert d.status.phase == Phase.CLAIMED
    assert kinds(d) == ["ApplyObjects", "CreateBuildRun"]


def test_a_builds_first_status_waits_a_moment_for_its_outcome() -> None:
    """The first look claims and starts the BuildRun but holds the CLAIMED status for
    status_batch_seconds: a build that ends by then costs one status write."""
    first = lc.decide(observe(), POLICY)
    assert kinds(first) == ["ClaimLease", "ApplyObjects", "CreateBuildRun"]
    assert first.status_may_wait_until == NOW + timedelta(seconds=1)
    assert first.requeue_at == NOW + timedelta(seconds=1)  # written then, if nothing ended
    claimed_at = NOW - timedelta(milliseconds=300)
    own = replace(lease(holder="op"), acquire_time=claimed_at, renew_time=claimed_at)
    running = lc.BuildRunView("wo1-a1", ConditionStatus.UNKNOWN)
    # Looked at again before then (the Lease's own event): still held, nothing repeated.
    again = lc.decide(observe(lease=own, build_run=running), POLICY)
    assert again.actions == [] and again.events == []
    assert again.status_may_wait_until == claimed_at + timedelta(seconds=1)
    # The BuildRun ended meanwhile: the status goes from nothing to SUCCEEDED in one write,
    # with the claim's own times and no Claimed Event (the operator's claims have none).
    done = lc.BuildRunView("wo1-a1", ConditionStatus.TRUE)
    ok = lc.decide(observe(lease=own, build_run=done), POLICY)
    assert ok.status.phase == Phase.SUCCEEDED and ok.status_may_wait_until is None
    assert ok.status.start_time == claimed_at and ok.status.attempt == 1
    assert [e.reason for e in ok.events] == ["Succeeded"], ok.events
    # Still running when the moment is over: CLAIMED is written as the first look had it.
    later = NOW + timedelta(seconds=1)
    late = lc.decide(observe(lease=own, build_run=running, now=later), POLICY)
    assert late.status_may_wait_until is None and late.actions == [] and late.events == []
    assert late.status.phase == Phase.CLAIMED and late.status.claimed_at == claimed_at
    assert late.status.start_time == claimed_at and late.status.claimed_by == "op"


def test_an_unrecorded_build_claim_is_adopted_so_cancel_and_deadline_stop_its_build_run() -> None:
    own = lease(holder="op", renewed=NOW - timedelta(seconds=5))
    running = lc.BuildRunView("wo1-a1", ConditionStatus.UNKNOWN)
    cancelled = lc.decide(observe(lease=own, build_run=running, spec_kw={"cancel": True}), POLICY)
    assert cancelled.status.phase == Phase.CANCELLED
    assert "CancelBuildRun" in kinds(cancelled), kinds(cancelled)
    late = lc.decide(
        observe(lease=own, build_run=running, spec_kw={"active_deadline_seconds": 3}), POLICY
    )
    assert late.status.phase == Phase.FAILED, late.status  # counted from the claim, 5 s ago
    assert "CancelBuildRun" in kinds(late), kinds(late)


def test_a_limited_work_type_records_its_claim_at_once() -> None:
    """Slots are counted from status: a claim on a limited work type is never held back,
    and an unrecorded one goes through admission again."""
    limited = replace(POLICY, concurrency_limits=(("build", 2),))
    first = lc.decide(observe(), limited)
    assert kinds(first) == ["ClaimLease", "ApplyObjects", "CreateBuildRun"]
    assert first.status_may_wait_until is None and first.status.phase == Phase.CLAIMED


def agents(lease_: LeaseView, status: WorkOrderStatus | None = None, **kw: object) -> lc.Decision:
    return lc.decide(observe(status, work_type="backup", yaml="{}", lease=lease_, **kw), POLICY)


def test_an_agents_claim_waits_a_moment_for_its_report() -> None:
    """An agent's claim that status does not record yet is recorded a second after it was
    made, with its Claimed Event, unless the report came first: then one write, one Event."""
    claimed_at = NOW - timedelta(milliseconds=300)
    fresh = replace(lease(), acquire_time=claimed_at, renew_time=claimed_at)
    for recorded in (None, WorkOrderStatus(phase=Phase.PENDING)):
        held = agents(fresh, recorded)
        assert held.status_may_wait_until == claimed_at + timedelta(seconds=1), recorded
        assert held.requeue_at == claimed_at + timedelta(seconds=1)
        assert held.events == [] and held.actions == []
    done = agents(replace(fresh, outcome=Outcome.SUCCEEDED))
    assert done.status.phase == Phase.SUCCEEDED and done.status_may_wait_until is None
    assert done.status.attempt == 1
    assert len(done.events) == 1 and done.events[0].reason == "Succeeded"
    assert "claimed by agent-1" in done.events[0].message, done.events
    late = agents(fresh, now=claimed_at + timedelta(seconds=1))
    assert late.status_may_wait_until is None and late.status.phase == Phase.CLAIMED
    assert late.status.claimed_by == "agent-1" and late.status.claimed_at == claimed_at
    assert [e.reason for e in late.events] == ["Claimed"]


def test_an_agents_held_claim_is_still_cancelled_and_never_held_when_it_should_not_be() -> None:
    fresh = replace(lease(), acquire_time=NOW - timedelta(milliseconds=300))
    cancelled = agents(fresh, spec_kw={"cancel": True})
    assert cancelled.status.phase == Phase.CANCELLED and cancelled.status_may_wait_until is None
    assert "RevokeLease" in kinds(cancelled), kinds(cancelled)
    limited = replace(POLICY, concurrency_limits=(("backup", 2),))
    d = lc.decide(observe(work_type="backup", yaml="{}", lease=fresh), limited)
    assert d.status_may_wait_until is None
    ahead = agents(replace(fresh, acquire_time=NOW + timedelta(seconds=5)))  # a clock ahead
    assert ahead.status_may_wait_until is None and ahead.status.phase == Phase.CLAIMED
    # A retry that comes due and is claimed in one look: its Requeued Event is written
    # with its status at once (a held decision with an Event would repeat the Event).
    due = WorkOrderStatus(
        phase=Phase.RETRY_PENDING, retry_count=1, next_retry_after=NOW - timedelta(seconds=1)
    )
    retried = agents(replace(fresh, attempt=2), due)
    assert retried.status.phase == Phase.CLAIMED and retried.status_may_wait_until is None
    assert [e.reason for e in retried.events] == ["Requeued", "Claimed"], retried.events


def test_an_agents_new_work_order_is_recorded_only_if_no_one_claims_it_for_a_while() -> None:
    """The API server shows it PENDING from its creation (the CRD's default); the
    operator's own record (conditions, startTime) waits `pending_status_seconds` from its
    creation: a claim made by then is recorded with it in one write. One waiting longer,
    of a type with a concurrency limit (its slots are counted from status) or with an
    activeDeadlineSeconds (its clock starts at startTime), is written at once."""

    def unclaimed(created: datetime, policy: lc.Policy = POLICY, **spec_kw: object) -> lc.Decision:
        return lc.decide(
            observe(work_type="backup", yaml="{}", created=created, spec_kw=spec_kw or None),
            policy,
        )

    created = NOW - timedelta(seconds=5)
    held = unclaimed(created)
    assert held.status.phase == Phase.PENDING
    assert held.status_may_wait_until == created + timedelta(seconds=30)
    assert held.requeue_at == created + timedelta(seconds=30)
    old = unclaimed(NOW - timedelta(seconds=30))
    assert old.status.phase == Phase.PENDING and old.status_may_wait_until is None
    limited = unclaimed(created, replace(POLICY, concurrency_limits=(("backup", 2),)))
    assert limited.status_may_wait_until is None
    deadline = unclaimed(created, active_deadline_seconds=60)
    assert deadline.status.phase == Phase.PENDING and deadline.status_may_wait_until is None
    at_once = unclaimed(created, replace(POLICY, pending_status_seconds=0.0))
    assert at_once.status_may_wait_until is None
    claimed = replace(lease(), acquire_time=NOW, renew_time=NOW, outcome=Outcome.SUCCEEDED)
    done = agents(claimed, created=created)  # claimed and done while the status waited
    assert done.status.phase == Phase.SUCCEEDED and done.status_may_wait_until is None
    suspended = lc.decide(
        observe(work_type="backup", yaml="{}", created=created, spec_kw={"suspend": True}),
        POLICY,
    )
    assert suspended.status.phase == Phase.SUSPENDED and suspended.status_may_wait_until is None


def after_build_run(
    claimed: WorkOrderStatus, run: lc.BuildRunView, **spec_kw: object
) -> lc.Decision:
    """The decision on a claimed build WorkOrder once its BuildRun shows `run`."""
    return lc.decide(
        observe(claimed, lease=lease(holder="op"), build_run=run, spec_kw=spec_kw or None),
        POLICY,
    )


def test_build_run_success_and_failure() -> None:
    claimed = lc.decide(observe(), POLICY).status
    ok = after_build_run(claimed, lc.BuildRunView("wo1-a1", ConditionStatus.TRUE))
    # the attempt's Lease stays with the WorkOrder as the record of who ran it
    assert ok.status.phase == Phase.SUCCEEDED and kinds(ok) == []
    assert get_condition(ok.status.conditions, "Ready").status == ConditionStatus.TRUE  # type: ignore[union-attr]
    failing = lc.BuildRunView("wo1-a1", ConditionStatus.FALSE, "BuildFailed", "exit 1")
    bad = after_build_run(claimed, failing)
    assert bad.status.phase == Phase.RETRY_PENDING
    assert bad.status.last_error_reason == "BuildFailed" and "exit 1" in (
        bad.status.last_error or ""
    )
    assert bad.status.next_retry_after == NOW + timedelta(seconds=10)


def test_reconciling_and_stalled_are_there_only_while_true() -> None:
    """kstatus's abnormal-true conditions: absent means False, so a finished WorkOrder
    carries Succeeded, Ready and Claimed, and no Reconciling=False or Stalled=False."""

    def types(status: WorkOrderStatus) -> dict[str, str]:
        return {c.type: str(c.status) for c in status.conditions}

    claimed = lc.decide(observe(), POLICY).status
    assert types(claimed) == {
        "Succeeded": "Unknown",
        "Ready": "False",
        "Reconciling": "True",
        "Claimed": "True",
    }
    ok = after_build_run(claimed, lc.BuildRunView("wo1-a1", ConditionStatus.TRUE)).status
    assert types(ok) == {"Succeeded": "True", "Ready": "True", "Claimed": "False"}
    failing = lc.BuildRunView("wo1-a1", ConditionStatus.FALSE, "BuildFailed", "exit 1")
    failed = after_build_run(claimed, failing, max_retries=0).status
    assert failed.phase == Phase.FAILED
    assert types(failed) == {
        "Succeeded": "False",
        "Ready": "False",
        "Stalled": "True",
        "Claimed": "False",
    }


def test_a_build_shipwright_refused_to_register_is_not_retried() -> None:
    claimed = lc.decide(observe(), POLICY).status
    refused = lc.decide(
        observe(
            claimed,
            lease=lease(holder="op"),
            build_run=lc.BuildRunView(
                "wo1-a1", ConditionStatus.FALSE, "BuildRegistrationFailed", "no such strategy"
            ),
        ),
        POLICY,
    )
    # Retries are left (maxRetries 2), but each would apply the same Build and fail alike.
    assert refused.status.phase == Phase.FAILED and refused.status.retry_count == 0
    assert refused.status.last_error_reason == "BuildRegistrationFailed"


def test_a_build_run_shipwright_failed_before_it_ran_is_created_again_once() -> None:
    claimed = lc.decide(observe(), POLICY).status
    unseen = lc.BuildRunView(
        "wo1-a1", ConditionStatus.FALSE, lc.BUILD_NOT_SEEN, 'build "hello" not found', uid="r-1"
    )
    again = lc.decide(observe(claimed, lease=lease(holder="op"), build_run=unseen), POLICY)
    # Shipwright's cache had not seen the Build yet: no TaskRun ran, so it is no attempt.
    assert again.status.phase == Phase.CLAIMED and again.status.attempt == 1
    assert kinds(again) == ["ApplyObjects", "RecreateBuildRun"]
    assert again.actions[1] == lc.RecreateBuildRun("wo1-a1", "r-1", "hello", 1)
    assert [e.reason for e in again.events] == ["BuildRunRecreated"]
    # The second BuildRun failing alike is the attempt failing: retried, not recreated.
    second = lc.decide(
        observe(claimed, lease=lease(holder="op"), build_run=replace(unseen, recreated=True)),
        POLICY,
    )
    assert second.status.phase == Phase.RETRY_PENDING and second.status.retry_count == 1
    assert second.status.last_error_reason == lc.BUILD_NOT_SEEN
    assert "RecreateBuildRun" not in kinds(second)


def test_retries_back_off_exponentially_then_fail() -> None:
    status = lc.decide(observe(work_type="test"), POLICY).status
    delays = []
    now = NOW
    for attempt in (1, 2, 3):
        claimed = lc.decide(
            observe(status, work_type="test", now=now, lease=lease(attempt, renewed=now)), POLICY
        ).status
        assert claimed.phase == Phase.CLAIMED and claimed.attempt == attempt
        failed = lc.decide(
            observe(
                claimed,
                work_type="test",
                now=now,
                lease=lease(attempt, renewed=now, outcome=Outcome.FAILED, error="boom"),
            ),
            POLICY,
        )
        status = failed.status
        if status.phase == Phase.RETRY_PENDING:
            assert status.next_retry_after is not None
            delays.append((status.next_retry_after - now).total_seconds())
            early = lc.decide(
                observe(
                    status,
                    work_type="test",
                    now=status.next_retry_after - timedelta(milliseconds=1),
                ),
                POLICY,
            )
            assert (
                early.status.phase == Phase.RETRY_PENDING
                and early.requeue_at == status.next_retry_after
            )
            now = status.next_retry_after
            status = lc.decide(observe(status, work_type="test", now=now), POLICY).status
            assert status.phase == Phase.PENDING
    assert delays == [10.0, 20.0]
    assert status.phase == Phase.FAILED and status.last_error == "boom" and status.retry_count == 2
    assert get_condition(status.conditions, "Stalled").status == ConditionStatus.TRUE  # type: ignore[union-attr]


def test_stale_agent_claim_times_out() -> None:
    claimed = lc.decide(observe(work_type="test", lease=lease()), POLICY).status
    still = lc.decide(
        observe(claimed, work_type="test", now=NOW + timedelta(seconds=29), lease=lease()), POLICY
    )
    assert still.status.phase == Phase.CLAIMED and still.requeue_at == NOW + timedelta(seconds=30)
    late = lc.decide(
        observe(claimed, work_type="test", now=NOW + timedelta(seconds=30), lease=lease()), POLICY
    )
    assert (
        late.status.phase == Phase.RETRY_PENDING
        and late.status.last_error_reason == "ClaimTimedOut"
    )
    assert kinds(late) == ["ReleaseLease"]


def test_lease_of_an_old_attempt_is_ended_not_adopted() -> None:
    status = WorkOrderStatus(phase=Phase.PENDING, retry_count=1, attempt=1)
    reported = lease(1, outcome=Outcome.FAILED)
    d = lc.decide(observe(status, work_type="test", lease=reported), POLICY)
    assert d.status.phase == Phase.PENDING and kinds(d) == ["ReleaseLease"]
    # still live (no report, not stale): its agent may be working, so it is told to stop
    # and drains before the next attempt can be claimed, rather than deleted under it
    d = lc.decide(observe(status, work_type="test", lease=lease(1)), POLICY)
    assert d.status.phase == Phase.PENDING and kinds(d) == ["RevokeLease"]


def test_premature_claim_during_backoff_is_released() -> None:
    status = WorkOrderStatus(
        phase=Phase.RETRY_PENDING,
        retry_count=1,
        attempt=1,
        next_retry_after=NOW + timedelta(seconds=5),
    )
    d = lc.decide(observe(status, work_type="test", lease=lease(2)), POLICY)
    assert d.status.phase == Phase.RETRY_PENDING and kinds(d) == ["ReleaseLease"]


@pytest.mark.parametrize(
    ("yaml", "reason"),
    [
        ("a: [unclosed", "InvalidYAML"),
        ("apiVersion: v1\nkind: Secret\nmetadata: {name: x}", "ForbiddenKind"),
        (BUILD.replace("name: hello", "name: hello\n  namespace: kube-system"), "ForeignNamespace"),
    ],
)
def test_bad_manifests_fail_at_once_without_applying(yaml: str, reason: str) -> None:
    d = lc.decide(observe(yaml=yaml), POLICY)
    assert d.status.phase == Phase.FAILED and d.status.last_error_reason == reason
    assert d.actions == [] and d.status.retry_count == 0


def test_terminal_work_order_keeps_its_record_and_ends_a_leftover_claim() -> None:
    done = WorkOrderStatus(phase=Phase.SUCCEEDED, attempt=1)
    d = lc.decide(observe(done, lease=lease(holder="op")), POLICY)
    assert d.status.phase == Phase.SUCCEEDED and kinds(d) == [] and d.events == []
    reported = lease(holder="agent-1", outcome=Outcome.SUCCEEDED)
    d = lc.decide(observe(done, work_type="test", lease=reported), POLICY)
    assert kinds(d) == []
    failed = WorkOrderStatus(phase=Phase.FAILED, attempt=1)
    d = lc.decide(observe(failed, work_type="test", lease=lease(holder="agent-1")), POLICY)
    assert d.status.phase == Phase.FAILED and kinds(d) == ["RevokeLease"] and d.events == []
    stale = lease(holder="agent-1", renewed=NOW - timedelta(seconds=60))
    d = lc.decide(observe(failed, work_type="test", lease=stale), POLICY)
    assert kinds(d) == ["ReleaseLease"]


def wp(key: str, state: str | None, reason: str | None = None, **kw: object) -> lc.WaitpointView:
    from workgate.api.waitpoint import CloseReason, WaitpointState
    from workgate.api.workorder import Gate
    from workgate.core.approvals import rules_key

    gate = Gate.model_validate(next(g for g in GATES if g["key"] == key))
    fields = {"approval_rules": rules_key(gate), **SPECS[key], **kw}
    return lc.WaitpointView(
        name=f"wo1-{key}",
        key=key,
        state=WaitpointState(state) if state else None,
        close_reason=CloseReason(reason) if reason else None,
        uid="u",
        resource_version="1",
        **fields,  # type: ignore[arg-type]
    )


SPECS: dict[str, dict[str, object]] = {
    "approve": {"stage": "BeforeExecution", "required_signal_names": ("ok",)},
    "verify": {"stage": "AfterSuccess", "timeout_seconds": 5, "on_timeout": "Continue"},
}
GATES = [
    {"key": "approve", "stage": "BeforeExecution", "requiredSignalNames": ["ok"]},
    {"key": "verify", "stage": "AfterSuccess", "timeoutSeconds": 5, "onTimeout": "Continue"},
]


def gated(
    status: WorkOrderStatus | None = None,
    *,
    waitpoints: dict[str, lc.WaitpointView] | None = None,
    **kw: object,
) -> lc.Observation:
    spec = WorkOrderSpec.model_validate(
        {"workType": "deploy", "yamlContent": "a: 1", "gates": GATES}
    )
    return lc.Observation(
        now=NOW,
        name="wo1",
        namespace="ns",
        generation=1,
        spec=spec,
        status=status or WorkOrderStatus(),
        waitpoints=waitpoints or {},
        **kw,
    )  # type: ignore[arg-type]


def test_new_gated_work_order_creates_its_waitpoints_and_waits() -> None:
    d = lc.decide(gated(), POLICY)
    assert d.status.phase == Phase.WAITING and d.status.waiting_on == "approve"
    assert [a.name for a in d.actions if isinstance(a, lc.CreateWaitpoint)] == [
        "wo1.approve",
        "wo1.verify",
    ]


def test_pending_waitpoint_is_activated_then_closing_it_resumes() -> None:
    waiting = lc.decide(gated(), POLICY).status
    d = lc.decide(
        gated(
            waiting,
            waitpoints={"approve": wp("approve", "pending"), "verify": wp("verify", "pending")},
        ),
        POLICY,
    )
    assert kinds(d) == ["ActivateWaitpoint"] and d.status.phase == Phase.WAITING
    d = lc.decide(
        gated(
            waiting,
            waitpoints={
                "approve": wp("approve", "closed", "Satisfied"),
                "verify": wp("verify", "pending"),
            },
        ),
        POLICY,
    )
    assert d.status.phase == Phase.PENDING and d.status.waiting_on is None


def test_expired_gate_with_fail_policy_fails_and_cancels_the_rest() -> None:
    waiting = lc.decide(gated(), POLICY).status
    d = lc.decide(
        gated(
            waiting,
            waitpoints={
                "approve": wp("approve", "closed", "Expired"),
                "verify": wp("verify", "pending"),
            },
        ),
        POLICY,
    )
    assert d.status.phase == Phase.FAILED and d.status.last_error_reason == "WaitpointExpired"
    assert kinds(d) == ["CancelWaitpoint"]


def test_a_rejected_gate_fails_the_work_order_recording_the_rejecter() -> None:
    from workgate.api.waitpoint import Rejection

    waiting = lc.decide(gated(), POLICY).status
    no = Rejection(waitpoint="wo1-approve", signal="s1", by="carol", at=NOW, payload="too risky")
    views = {
        "approve": wp("approve", "closed", "Rejected", rejection=no),
        "verify": wp("verify", "pending"),
    }
    d = lc.decide(gated(waiting, waitpoints=views), POLICY)
    assert d.status.phase == Phase.FAILED and d.status.last_error_reason == "Rejected"
    assert d.status.rejection == no and d.status.retry_count == 0
    assert "rejected by carol: too risky" in (d.status.last_error or "")
    assert kinds(d) == ["CancelWaitpoint"]
    assert [(e.type, e.reason) for e in d.events] == [("Warning", "Rejected")]


def test_a_waitpoint_with_other_approval_rules_is_not_the_declared_gate() -> None:
    waiting = lc.decide(gated(), POLICY).status
    lowered = wp("approve", "pending", approval_rules="{}")  # e.g. without forbidSelfApproval
    d = lc.decide(gated(waiting, waitpoints={"approve": lowered}), POLICY)
    assert d.status.phase == Phase.FAILED and d.status.last_error_reason == "WaitpointConflict"


def test_success_stops_at_after_success_gate_and_continue_policy_completes() -> None:
    claimed = WorkOrderStatus(phase=Phase.CLAIMED, attempt=1, claimed_by="agent-1")
    views = {"approve": wp("approve", "closed", "Satisfied"), "verify": wp("verify", "pending")}
    d = lc.decide(gated(claimed, waitpoints=views, lease=lease(outcome=Outcome.SUCCEEDED)), POLICY)
    assert d.status.phase == Phase.WAITING and d.status.waiting_stage == "AfterSuccess"
    assert kinds(d) == ["ActivateWaitpoint"]
    views["verify"] = wp("verify", "closed", "Expired")
    done = lc.decide(gated(d.status, waitpoints=views), POLICY)
    assert done.status.phase == Phase.SUCCEEDED


def test_a_waitpoint_that_lowers_the_declared_bar_is_not_trusted() -> None:
    waiting = lc.decide(gated(), POLICY).status
    forged = lc.WaitpointView(
        name="wo1.approve",
        key="approve",
        state=None,
        close_reason=None,
        uid="x",
        resource_version="1",
        stage="BeforeExecution",
        required_signal_names=(),
    )
    d = lc.decide(gated(waiting, waitpoints={"approve": forged}), POLICY)
    assert d.status.phase == Phase.FAILED and d.status.last_error_reason == "WaitpointConflict"


def test_dynamic_suspension_waits_at_the_claimants_waitpoint_then_requeues() -> None:
    claimed = WorkOrderStatus(phase=Phase.CLAIMED, attempt=1, claimed_by="agent-1")
    suspended = LeaseView(
        name="wo1-claim",
        holder="agent-1",
        attempt=1,
        acquire_time=NOW,
        renew_time=NOW,
        duration_seconds=30,
        resource_version="7",
        uid="u",
        outcome=Outcome.SUSPENDED,
        waitpoint_key="review",
    )
    d = lc.decide(observe(claimed, work_type="test", lease=suspended), POLICY)
    assert d.status.phase == Phase.WAITING and d.status.waiting_on == "review"
    assert d.status.waiting_stage == "Dynamic" and d.status.retry_count == 0
    assert kinds(d) == ["ReleaseLease"]
    review = lc.WaitpointView(
        name="wo1-review",
        key="review",
        state=None,
        close_reason=None,
        uid="w",
        resource_version="1",
        stage="Dynamic",
        required_signal_names=("go",),
    )
    pending = lc.decide(observe(d.status, work_type="test", waitpoints={"review": review}), POLICY)
    assert pending.status.phase == Phase.WAITING and pending.actions == []
    from dataclasses import replace

    from workgate.api.waitpoint import CloseReason, WaitpointState

    done = replace(review, state=WaitpointState.CLOSED, close_reason=CloseReason.SATISFIED)
    resumed = lc.decide(observe(d.status, work_type="test", waitpoints={"review": done}), POLICY)
    assert resumed.status.phase == Phase.PENDING and resumed.status.retry_count == 0


def test_an_agent_that_finished_before_the_operator_looked_costs_one_status_write_and_one_event() -> (
    None
):
    pending = lc.decide(observe(work_type="test"), POLICY).status
    assert pending.phase == Phase.PENDING
    done = lc.decide(
        observe(pending, work_type="test", lease=lease(outcome=Outcome.SUCCEEDED)), POLICY
    )
    assert done.status.phase == Phase.SUCCEEDED and kinds(done) == []
    [event] = done.events
    assert event.reason == "Succeeded"
    assert "claimed by agent-1" in event.message and "succeeded" in event.message
