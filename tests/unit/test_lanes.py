"""Which WorkOrders may wait in the work queue's low lane: finished and up to date only."""

from typing import Any

from workgate.core.decisions import Policy
from workgate.operator.lanes import child_settled, reported, settled

POLICY = Policy(identity="operator")


def wo(phase: str | None, *, generation: int = 2, observed: int | None = 2, **meta: Any) -> Any:
    status = {"phase": phase, "observedGeneration": observed} if phase else {}
    return {
        "metadata": {"name": "a", "uid": "u1", "generation": generation, **meta},
        "spec": {"workType": "build"},
        "status": status,
    }


def lease(holder: str, **annotations: str) -> Any:
    return {"metadata": {"annotations": annotations}, "spec": {"holderIdentity": holder}}


def test_finished_and_up_to_date_is_settled_and_nothing_else_is() -> None:
    assert settled(wo("SUCCEEDED")) and settled(wo("FAILED")) and settled(wo("CANCELLED"))
    assert not settled(wo(None)) and not settled(wo("PENDING")) and not settled(wo("CLAIMED"))
    assert not settled(wo("SUCCEEDED", observed=1))  # a spec change not yet observed
    assert not settled(wo("SUCCEEDED", deletionTimestamp="2026-01-01T00:00:00Z"))
    asked = wo("FAILED", annotations={"workgate.io/rerun": "r2"})
    assert not settled(asked)
    asked["status"]["rerun"] = "r2"  # the rerun happened
    assert settled(asked)


def test_a_childs_event_waits_unless_its_workorder_or_a_live_claim_asks_for_work() -> None:
    done, pending = wo("SUCCEEDED"), wo("PENDING")

    def low(owner: Any, child: Any, *, is_lease: bool = True, deleted: bool = False) -> bool:
        return child_settled(owner, "u1", child, lease=is_lease, deleted=deleted, policy=POLICY)

    assert low(None, lease("agent"))  # the WorkOrder's own event places it
    assert low({**done, "metadata": {**done["metadata"], "uid": "u0"}}, lease("agent"))
    assert not low(pending, lease("operator"))
    assert not low(pending, {}, is_lease=False)
    assert low(done, {}, is_lease=False)  # a BuildRun
    assert low(done, lease("operator"))  # the record of our successful attempt
    assert low(done, lease("agent", **{"workgate.io/result": "Succeeded"}))
    assert low(done, lease("agent"), deleted=True)
    assert not low(done, lease("agent"))  # claimed after it ended: revoked at once
    failed = wo("FAILED")
    assert not low(failed, lease("operator"))  # our claim left after a failure: released
    agent_type = {**done, "spec": {"workType": "deploy"}}
    assert not low(agent_type, lease("operator"))  # an agent's claim, under our user


def test_an_outcome_is_an_agents_report_on_its_claim() -> None:
    report = {"metadata": {"annotations": {"workgate.io/result": "SUCCEEDED"}}}
    assert reported(report)
    assert not reported({"metadata": {"annotations": {"workgate.io/instance": "a"}}})
    assert not reported({"metadata": {}})
