"""The API server shows a WorkOrder PENDING from its creation on (the CRD's default); what
decides from the phase reads the operator's record of it (api/wire.py recorded_phase)."""

from __future__ import annotations

from workgate.api.wire import open_to_claim, recorded_phase
from workgate.api.workorder import WorkOrderStatus

SHOWN = {"phase": "PENDING", "attempt": 0, "retryCount": 0, "observedGeneration": 0}  # defaults
WRITTEN = {**SHOWN, "observedGeneration": 1}
GATED = {"workType": "deploy", "gates": [{"key": "approval"}]}  # BeforeExecution


def test_the_default_phase_is_not_the_operators_record() -> None:
    assert recorded_phase(SHOWN) is None and recorded_phase(None) is None
    assert recorded_phase({"phase": "PENDING"}) is None  # written before the 0 default
    assert recorded_phase(WRITTEN) == "PENDING"
    assert WorkOrderStatus.recorded(SHOWN).phase is None
    assert WorkOrderStatus.recorded(SHOWN).retry_count == 0
    assert WorkOrderStatus.recorded(WRITTEN).phase == "PENDING"


def test_a_gate_is_not_passed_by_the_default_phase() -> None:
    """Before the operator has looked, a WorkOrder with a gate before execution is not
    claimable, though the API server shows it PENDING; once the operator records PENDING
    (its gates passed), it is."""
    assert not open_to_claim(GATED, SHOWN)
    assert open_to_claim(GATED, WRITTEN)
    assert open_to_claim({"workType": "deploy"}, SHOWN)  # no gate: claimable at once
    assert not open_to_claim({"workType": "deploy", "suspend": True}, SHOWN)
