"""The gate rules of the WorkOrder state machine: create, activate, pass, reject, reset.

A mixin of `core.lifecycle._Machine` (it shares the machine's state: `obs`, `st`,
`decision`, `waitpoints`); split out so each part reads in one sitting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workgate.api.waitpoint import CloseReason, TimeoutPolicy, WaitpointStage, WaitpointState
from workgate.api.workorder import Gate, GateStage, Phase, WorkOrderStatus
from workgate.core.decisions import (
    ActivateWaitpoint,
    CancelWaitpoint,
    CreateWaitpoint,
    Decision,
    DeleteWaitpoint,
    Observation,
    WaitpointView,
)
from workgate.core.naming import waitpoint_name

# Waitpoints closed without passing: a rerun asks for a new decision at these gates.
UNPASSED = frozenset({CloseReason.REJECTED, CloseReason.EXPIRED, CloseReason.CANCELLED})


class GateRules:
    obs: Observation
    st: WorkOrderStatus
    decision: Decision
    waitpoints: dict[str, WaitpointView]

    if TYPE_CHECKING:  # provided by the machine

        def event(self, type_: str, reason: str, message: str) -> None: ...
        def fail(self, reason: str, message: str, *, retryable: bool) -> None: ...
        def complete(self) -> None: ...

    def gates(self, stage: WaitpointStage) -> list[Gate]:
        if stage == WaitpointStage.DYNAMIC:
            # A claimant's suspension: its waitpoint is the gate, with the bar it asked for.
            key = self.st.waiting_on or ""
            view = self.waitpoints.get(key)
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
            if gate.key not in self.waitpoints:
                name = waitpoint_name(self.obs.name, gate.key)
                self.decision.actions.append(CreateWaitpoint(name, gate))

    def reset_unpassed_gates(self) -> None:
        """A rerun: gates that closed without passing are decided anew (fresh waitpoint,
        fresh token); gates that passed stay passed, as a retried Argo workflow keeps its
        resumed suspend steps."""
        for key, view in list(self.waitpoints.items()):
            if view.close_reason in UNPASSED:
                self.decision.actions.append(DeleteWaitpoint(view))
                del self.waitpoints[key]

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
            view = self.waitpoints.get(gate.key)
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
        for view in self.waitpoints.values():
            if view.state in (WaitpointState.PENDING, WaitpointState.ACTIVE):
                self.decision.actions.append(CancelWaitpoint(view))
