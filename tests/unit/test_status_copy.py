"""The decision's working copy of a status: equal to it, with the same set fields, and
sharing nothing mutable with it (a decision never changes its observation)."""

from datetime import timedelta

from tests.unit.samples import NOW
from workgate.api.common import Condition, ConditionStatus
from workgate.api.workorder import Phase, QueueStatus, RunRecord, WorkOrderStatus
from workgate.core.lifecycle_status import copied


def condition(type_: str, status: ConditionStatus) -> Condition:
    return Condition(
        type=type_, status=status, last_transition_time=NOW, reason="Because", message="so"
    )


def sample() -> WorkOrderStatus:
    return WorkOrderStatus(
        phase=Phase.FAILED,
        attempt=2,
        history=[
            RunRecord(
                phase=Phase.FAILED, first_attempt=1, last_attempt=1, reason="Boom", completed_at=NOW
            )
        ],
        queue=QueueStatus(position=3, reason="Queued", message="behind 2"),
        conditions=[condition("Ready", ConditionStatus.FALSE)],
    )


def test_a_copy_is_equal_and_keeps_the_set_fields() -> None:
    status = sample()
    copy = copied(status)
    assert copy == status and copy is not status
    assert copy.model_fields_set == status.model_fields_set
    assert copy.to_wire() == status.to_wire()


def test_changing_the_copy_leaves_the_original_alone() -> None:
    status = sample()
    wire = status.to_wire()
    copy = copied(status)
    copy.conditions[0].status = ConditionStatus.TRUE
    copy.conditions.append(condition("Stalled", ConditionStatus.TRUE))
    copy.history[0].last_attempt = 5
    assert copy.queue is not None and status.queue is not None
    copy.queue.position = 1
    copy.completed_at = NOW + timedelta(seconds=1)
    assert status.to_wire() == wire
    assert status.conditions[0].status == ConditionStatus.FALSE and len(status.conditions) == 1


def test_the_wire_form_leaves_out_an_empty_history_and_a_zero_retry_base() -> None:
    bare = WorkOrderStatus(phase=Phase.PENDING).to_wire()
    assert "history" not in bare and "retryBase" not in bare
    assert bare["retryCount"] == 0  # a printer column: kept at zero
    rerun = sample().model_copy(update={"retry_base": 1}).to_wire()
    assert rerun["retryBase"] == 1
    assert [run["phase"] for run in rerun["history"]] == ["FAILED"]
    assert WorkOrderStatus.model_validate(bare) == WorkOrderStatus(phase=Phase.PENDING)
