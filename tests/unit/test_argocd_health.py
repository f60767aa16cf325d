"""Argo CD health checks (deploy/argocd/*.lua), run by a real Lua 5.1 like Argo CD's.

Argo CD evaluates health scripts in gopher-lua (Lua 5.1) with only the base, table,
package and a reduced os library open. `evaluate` reproduces that sandbox with lupa, so a
script that used e.g. `string.format` or `("x"):upper()` fails here as it would there.
The WorkOrder statuses come from the real state machine (`lifecycle.decide`) where it
can produce them, so the checks read the shape the operator actually writes.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import lupa.lua51 as lua51
import pytest
import yaml

from tests.unit.samples import BUILD, NOW, POLICY
from tests.unit.test_lifecycle import lease, observe
from workgate.api.common import ConditionStatus
from workgate.api.workorder import WorkOrderSpec, WorkOrderStatus
from workgate.core import lifecycle as lc
from workgate.core.controls import QueueView
from workgate.core.lifecycle import BuildRunView

ARGOCD_DIR = Path(__file__).resolve().parents[2] / "deploy" / "argocd"
WORKORDER_LUA = (ARGOCD_DIR / "workorder-health.lua").read_text()
WAITPOINT_LUA = (ARGOCD_DIR / "waitpoint-health.lua").read_text()
HEALTH_KEY = "resource.customizations.health.workgate.io_{kind}"
STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}

_SANDBOX = """
-- What Argo CD's VM does not open: the string, math, io, coroutine and debug libraries.
-- Dropping the string metatable also removes method calls on strings ("x"):sub(1).
local keep_os = {time = os.time, date = os.date, clock = os.clock}
debug.setmetatable("", nil)
string, math, io, coroutine, debug, python = nil, nil, nil, nil, nil, nil
os = keep_os
"""


def evaluate(script: str, obj: dict[str, Any]) -> dict[str, str]:
    """Run a health script on `obj` the way Argo CD does; return its {status, message}."""
    runtime = lua51.LuaRuntime(register_eval=False, register_builtins=False)
    runtime.execute(_SANDBOX)
    runtime.globals().obj = runtime.table_from(obj, recursive=True)
    result = runtime.execute(script)
    assert lua51.lua_type(result) == "table", f"the script returned {result!r}, not a table"
    health = {str(k): v for k, v in result.items()}
    assert set(health) <= {"status", "message"}, health
    assert health["status"] in STATUSES, health
    assert isinstance(health.get("message", ""), str), health
    return {"status": health["status"], "message": health.get("message", "")}


def workorder_health(obj: dict[str, Any]) -> dict[str, str]:
    return evaluate(WORKORDER_LUA, obj)


def waitpoint_health(obj: dict[str, Any]) -> dict[str, str]:
    return evaluate(WAITPOINT_LUA, obj)


# --- WorkOrder: statuses from the real state machine ----------------------------------


def decide(
    status: WorkOrderStatus | None = None,
    *,
    work_type: str = "build",
    max_retries: int = 2,
    now: datetime = NOW,
    build_run: BuildRunView | None = None,
) -> WorkOrderStatus:
    spec = WorkOrderSpec(
        work_type=work_type, yaml_content=BUILD, max_retries=max_retries, backoff_seconds=10
    )
    observation = lc.Observation(
        now=now,
        name="wo1",
        namespace="ns",
        generation=1,
        spec=spec,
        status=status or WorkOrderStatus(),
        build_run=build_run,
    )
    return lc.decide(observation, POLICY).status


def as_object(status: WorkOrderStatus | None, generation: int = 1) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "workgate.io/v1alpha1",
        "kind": "WorkOrder",
        "metadata": {"name": "wo1", "namespace": "ns", "generation": generation},
        "spec": {"workType": "build", "yamlContent": BUILD},
    }
    if status is not None:
        obj["status"] = status.to_wire()
    return obj


def finished(succeeded: bool, reason: str = "", message: str = "") -> BuildRunView:
    status = ConditionStatus.TRUE if succeeded else ConditionStatus.FALSE
    return BuildRunView("wo1-a1", status, reason, message)


def test_a_workorder_without_status_is_progressing() -> None:
    assert workorder_health(as_object(None))["status"] == "Progressing"
    obj = as_object(None)
    obj["status"] = {}
    assert workorder_health(obj)["status"] == "Progressing"


def test_pending_and_claimed_are_progressing() -> None:
    pending = decide(work_type="test")  # nobody claims agent work here: stays PENDING
    assert pending.phase == "PENDING"
    health = workorder_health(as_object(pending))
    assert health == {"status": "Progressing", "message": "waiting for a claimant of test work"}

    claimed = decide()  # build work: the operator claims it at once
    assert claimed.phase == "CLAIMED"
    health = workorder_health(as_object(claimed))
    assert health == {"status": "Progressing", "message": "attempt 1 held by op"}


def test_retry_pending_is_progressing_and_says_why() -> None:
    claimed = decide()
    retrying = decide(
        claimed, now=NOW + timedelta(seconds=5), build_run=finished(False, "Failed", "exit 1")
    )
    assert retrying.phase == "RETRY_PENDING"
    health = workorder_health(as_object(retrying))
    assert health["status"] == "Progressing"
    assert health["message"].startswith("retry 1 after ")
    assert health["message"].endswith("; last error: BuildRun wo1-a1: exit 1")


def test_succeeded_is_healthy() -> None:
    done = decide(decide(), build_run=finished(True))
    assert done.phase == "SUCCEEDED"
    assert workorder_health(as_object(done)) == {
        "status": "Healthy",
        "message": "succeeded on attempt 1",
    }


def test_failed_is_degraded_with_the_last_error() -> None:
    failed = decide(decide(max_retries=0), max_retries=0, build_run=finished(False, "", "oom"))
    assert failed.phase == "FAILED"
    assert workorder_health(as_object(failed)) == {
        "status": "Degraded",
        "message": "BuildRun wo1-a1: oom",
    }


def test_failed_without_last_error_falls_back_to_the_ready_message() -> None:
    obj = as_object(None)
    obj["status"] = {
        "phase": "FAILED",
        "conditions": [
            {"type": "Ready", "status": "False", "reason": "X", "message": "gave up"},
        ],
    }
    assert workorder_health(obj) == {"status": "Degraded", "message": "gave up"}
    del obj["status"]["conditions"]
    assert workorder_health(obj) == {"status": "Degraded", "message": "Failed"}


def test_waiting_at_a_waitpoint_is_suspended() -> None:
    obj = as_object(None)
    obj["status"] = {
        "phase": "WAITING",
        "observedGeneration": 1,
        "conditions": [
            {"type": "Ready", "status": "False", "reason": "Waiting",
             "message": "waiting at waitpoint wo1.approve"},
        ],
    }  # fmt: skip
    assert workorder_health(obj) == {
        "status": "Suspended",
        "message": "waiting at waitpoint wo1.approve",
    }
    del obj["status"]["conditions"]
    assert workorder_health(obj) == {"status": "Suspended", "message": "Waiting at a waitpoint"}


CLAIMED_BY_AGENT = WorkOrderStatus(phase="CLAIMED", attempt=1, claimed_by="agent-1", claimed_at=NOW)


def without_conditions(status: WorkOrderStatus) -> WorkOrderStatus:
    return status.model_copy(update={"conditions": []})


def test_cancelled_is_degraded_as_argo_cd_rates_a_stopped_workflow() -> None:
    cancelled = lc.decide(
        observe(CLAIMED_BY_AGENT, work_type="test", spec_kw={"cancel": True}, lease=lease()),
        POLICY,
    ).status
    assert cancelled.phase == "CANCELLED"
    assert workorder_health(as_object(cancelled)) == {
        "status": "Degraded",
        "message": "cancelled during attempt 1",
    }
    bare = as_object(without_conditions(cancelled))
    assert workorder_health(bare) == {"status": "Degraded", "message": "Cancelled"}


def test_suspended_is_suspended() -> None:
    suspended = lc.decide(observe(work_type="test", spec_kw={"suspend": True}), POLICY).status
    assert suspended.phase == "SUSPENDED"
    assert workorder_health(as_object(suspended)) == {
        "status": "Suspended",
        "message": "spec.suspend is true: no attempt is claimed until it is false",
    }
    bare = as_object(without_conditions(suspended))
    assert workorder_health(bare) == {"status": "Suspended", "message": "Suspended (spec.suspend)"}


def test_queued_is_progressing_and_says_where_it_stands() -> None:
    full = QueueView(limit=2, active=2, admitted=False, position=3)
    queued = lc.decide(observe(work_type="test", queue=full), POLICY).status
    assert queued.phase == "QUEUED" and queued.queue is not None
    assert workorder_health(as_object(queued)) == {
        "status": "Progressing",
        "message": "queued: 2/2 test WorkOrders hold a slot; position 3 in the queue",
    }
    # An operator that gives no message: the position and the reason.
    terse = queued.model_copy(update={"queue": queued.queue.model_copy(update={"message": ""})})
    assert workorder_health(as_object(terse))["message"] == (
        "queued at position 3: ConcurrencyLimit"
    )
    # Without status.queue, the operator's Ready message.
    obj = as_object(queued.model_copy(update={"queue": None}))
    assert workorder_health(obj) == {
        "status": "Progressing",
        "message": "2/2 test WorkOrders hold a slot; position 3 in the queue",
    }


def test_a_cancel_not_yet_observed_is_progressing() -> None:
    """spec.cancel bumps the generation: until the operator answers, the old status does not
    speak for it (a running WorkOrder does not look Degraded or Healthy too early)."""
    claimed = lc.decide(observe(CLAIMED_BY_AGENT, work_type="test", lease=lease()), POLICY)
    assert claimed.status.phase == "CLAIMED"
    assert workorder_health(as_object(claimed.status, generation=2))["status"] == "Progressing"


def test_a_status_of_an_older_generation_is_progressing() -> None:
    done = decide(decide(), build_run=finished(True))
    health = workorder_health(as_object(done, generation=2))
    assert health == {
        "status": "Progressing",
        "message": "Waiting for the workgate operator to observe generation 2",
    }


def test_an_unknown_phase_is_unknown() -> None:
    obj = as_object(None)
    obj["status"] = {"phase": "EXPLODED"}
    assert workorder_health(obj) == {
        "status": "Unknown",
        "message": "Unknown WorkOrder phase EXPLODED",
    }


# --- Waitpoint ------------------------------------------------------------------------


def waitpoint(status: dict[str, Any] | None, required: list[str] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "workgate.io/v1alpha1",
        "kind": "Waitpoint",
        "metadata": {"name": "wo1.approve", "namespace": "ns", "generation": 1},
        "spec": {
            "workOrderName": "wo1",
            "key": "approve",
            "requiredSignalNames": ["approve", "qa"] if required is None else required,
        },
    }
    if status is not None:
        obj["status"] = status
    return obj


def received(*names: str) -> list[dict[str, str]]:
    return [
        {"name": n, "signal": f"sig-{n}", "sender": "alice", "receivedAt": "2026-01-01T12:00:00Z",
         "payloadDigest": "0" * 64, "nonce": f"nonce-{n}-0123456789"}
        for n in names
    ]  # fmt: skip


def test_a_waitpoint_without_status_is_progressing() -> None:
    assert waitpoint_health(waitpoint(None))["status"] == "Progressing"


def test_pending_and_active_waitpoints_are_suspended_and_say_what_is_missing() -> None:
    health = waitpoint_health(waitpoint({"state": "pending", "receivedSignals": received("qa")}))
    assert health == {
        "status": "Suspended",
        "message": "Pending (the WorkOrder has not reached it yet), "
        "waiting for signals approve (1 of 2 received)",
    }
    active = {
        "state": "active",
        "expiresAt": "2026-01-02T12:00:00Z",
        "receivedSignals": [],
        "receivedCount": 0,
    }
    assert waitpoint_health(waitpoint(active)) == {
        "status": "Suspended",
        "message": "waiting for signals approve, qa (0 of 2 received); "
        "expires at 2026-01-02T12:00:00Z",
    }


def test_an_empty_required_list_waits_for_any_signal() -> None:
    health = waitpoint_health(waitpoint({"state": "active"}, required=[]))
    assert health == {"status": "Suspended", "message": "waiting for any signal"}


def test_the_operators_own_summary_of_what_is_missing_wins() -> None:
    active = {"state": "active", "waitingFor": "approve: 1 more (approved: alice)"}
    assert waitpoint_health(waitpoint(active)) == {
        "status": "Suspended",
        "message": "waiting for approve: 1 more (approved: alice)",
    }


def test_a_rejected_waitpoint_is_degraded_and_says_by_whom() -> None:
    rejection = {"by": "carol", "at": "2026-01-01T12:00:00Z", "waitpoint": "w", "signal": "s"}
    closed = {"state": "closed", "closeReason": "Rejected", "rejection": rejection}
    assert waitpoint_health(waitpoint(closed)) == {
        "status": "Degraded",
        "message": "Rejected by carol",
    }


@pytest.mark.parametrize(
    ("reason", "status"),
    [
        ("Satisfied", "Healthy"),
        ("Expired", "Degraded"),
        ("Cancelled", "Healthy"),
        ("Rejected", "Degraded"),
    ],
)
def test_closed_waitpoints(reason: str, status: str) -> None:
    closed = {"state": "closed", "closeReason": reason, "receivedSignals": received("approve")}
    health = waitpoint_health(waitpoint(closed))
    assert health["status"] == status
    ready = {"type": "Ready", "status": "False", "reason": reason, "message": f"closed: {reason}"}
    health = waitpoint_health(waitpoint({**closed, "conditions": [ready]}))
    assert health == {"status": status, "message": f"closed: {reason}"}


@pytest.mark.parametrize(
    "status", [{"state": "closed", "closeReason": "Whatever"}, {"state": "melted"}]
)
def test_unknown_waitpoint_states_are_unknown(status: dict[str, Any]) -> None:
    assert waitpoint_health(waitpoint(status))["status"] == "Unknown"


# --- the sandbox and the shipped configuration ----------------------------------------


def test_the_sandbox_is_as_narrow_as_argo_cds() -> None:
    with pytest.raises(lua51.LuaError):
        evaluate('return {status = string.format("%s", "Healthy")}', {})
    with pytest.raises(lua51.LuaError):
        evaluate('return {status = ("Healthy"):sub(1)}', {})
    assert evaluate('return {status = table.concat({"Heal", "thy"})}', {})["status"] == "Healthy"


def test_argocd_cm_patch_embeds_exactly_the_lua_files() -> None:
    patch = yaml.safe_load((ARGOCD_DIR / "argocd-cm-patch.yaml").read_text())
    assert (patch["kind"], patch["metadata"]["name"]) == ("ConfigMap", "argocd-cm")
    data = patch["data"]
    assert data == {
        HEALTH_KEY.format(kind="WorkOrder"): WORKORDER_LUA,
        HEALTH_KEY.format(kind="Waitpoint"): WAITPOINT_LUA,
    }, "paste deploy/argocd/*.lua into argocd-cm-patch.yaml again"


def test_the_kustomize_component_uses_the_same_files() -> None:
    component = yaml.safe_load((ARGOCD_DIR / "kustomization.yaml").read_text())
    assert component["kind"] == "Component"
    (generator,) = component["configMapGenerator"]
    assert (generator["name"], generator["behavior"]) == ("argocd-cm", "merge")
    assert sorted(generator["files"]) == [
        HEALTH_KEY.format(kind="Waitpoint") + "=waitpoint-health.lua",
        HEALTH_KEY.format(kind="WorkOrder") + "=workorder-health.lua",
    ]
