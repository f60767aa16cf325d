"""Sample inputs shared by the unit tests of the lifecycle and its consumers."""

from datetime import UTC, datetime

from workgate.api.common import Condition, ConditionStatus
from workgate.api.wire import Phase
from workgate.api.workorder import QueueStatus, WorkOrderStatus
from workgate.core import lifecycle as lc

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
BUILD = """
apiVersion: shipwright.io/v1beta1
kind: Build
metadata:
  name: hello
spec:
  source: {type: Git, git: {url: https://example.invalid/repo}}
  strategy: {name: buildah, kind: ClusterBuildStrategy}
  output: {image: registry.invalid/hello:latest}
"""
POLICY = lc.Policy(identity="op", backoff_cap_seconds=1000)


def _ready(reason: str, message: str) -> Condition:
    return Condition(
        type="Ready",
        status=ConditionStatus.FALSE,
        observed_generation=1,
        last_transition_time=NOW,
        reason=reason,
        message=message,
    )


# Statuses of the work controls' phases, built with the API models (so their shape is the
# one the CRD accepts): cancelled by spec.cancel, held by spec.suspend, waiting for a slot
# at its work type's concurrency limit.
CANCELLED = WorkOrderStatus(
    phase=Phase.CANCELLED,
    observed_generation=1,
    attempt=1,
    completed_at=NOW,
    conditions=[_ready("Cancelled", "cancelled during attempt 1")],
)
SUSPENDED = WorkOrderStatus(
    phase=Phase.SUSPENDED,
    observed_generation=1,
    conditions=[_ready("Suspended", "suspended: no attempt is claimed until resumed")],
)
QUEUED = WorkOrderStatus(
    phase=Phase.QUEUED,
    observed_generation=1,
    queue=QueueStatus(
        reason="ConcurrencyLimit",
        message="2 of 2 build WorkOrders running",
        position=3,
    ),
    conditions=[_ready("Queued", "queued behind 2 build WorkOrders")],
)
