"""What travels on the wire, without the models: group, labels, phases and timestamps.

Standard library only, so a lean process (an agent) can speak workgate's protocol
without importing Pydantic; the models in this package build on these names.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

GROUP = "workgate.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "workgate"

# Labels and annotations the operator and agents put on the objects they create.
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "workgate"
LABEL_WORKORDER = f"{GROUP}/workorder"
LABEL_WORK_TYPE = f"{GROUP}/work-type"  # on claim Leases: agents watch their own type's


class Phase(StrEnum):
    """Queue phase of a WorkOrder (the seed's `status`, plus the terminal states)."""

    PENDING = "PENDING"
    CLAIMED = "CLAIMED"
    RETRY_PENDING = "RETRY_PENDING"
    WAITING = "WAITING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"  # spec.cancel: stopped by request, terminal
    SUSPENDED = "SUSPENDED"  # spec.suspend: not claimed until resumed
    QUEUED = "QUEUED"  # its work type is at its concurrency limit: waits for a slot


TERMINAL_PHASES = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED})


# Phases in which no claim is open: what an agent's feed asks the API server to leave out.
UNCLAIMABLE_PHASES = (
    Phase.CLAIMED,
    Phase.WAITING,
    Phase.RETRY_PENDING,
    Phase.SUSPENDED,
    Phase.QUEUED,
    *TERMINAL_PHASES,
)

# Annotations a user (or `kubectl workgate`) sets on a WorkOrder: requests, not spec, so a
# GitOps source of truth that does not carry them is not fought over.
ANNOTATION_RERUN = f"{GROUP}/rerun"  # a new value starts a FAILED/CANCELLED WorkOrder over
MAX_RERUN = 128  # status.rerun's maxLength: the annotation is read bounded as it is


def rerun_request(meta: Mapping[str, Any]) -> str | None:
    """The rerun annotation of a WorkOrder's metadata, bounded as status.rerun is (a longer
    value would fail every status write)."""
    return str((meta.get("annotations") or {}).get(ANNOTATION_RERUN) or "")[:MAX_RERUN] or None


def recorded_phase(status: Mapping[str, Any] | None) -> str | None:
    """The phase the operator recorded; None before its first status write. The API
    server shows every WorkOrder PENDING from its creation on (the CRD's default, as it
    shows a new Pod Pending), before the operator has looked at its gates, suspension or
    work type's limit: what the operator wrote itself carries observedGeneration, at
    least 1 (the default is 0). The one home of the rule: whoever decides from a
    WorkOrder's phase reads it through here."""
    status = status or {}
    if not int(status.get("observedGeneration") or 0):
        return None
    return str(status.get("phase") or "") or None


def open_to_claim(spec: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    """May a claimant take this WorkOrder's current attempt? When recorded PENDING, and
    also before the operator has written any status when nothing gates it before
    execution: a new WorkOrder the operator has not looked at yet is claimed straight
    away (the operator, seeing the claim first, records PENDING and CLAIMED in one status
    write)."""
    phase = recorded_phase(status)
    if phase == Phase.PENDING:
        return not spec.get("suspend") and not spec.get("cancel")
    if phase or spec.get("suspend") or spec.get("cancel"):
        return False
    gates = spec.get("gates") or []
    return not any(g.get("stage", "BeforeExecution") == "BeforeExecution" for g in gates)


def current_attempt(retry_count: int) -> int:
    """The attempt a WorkOrder is on: the first, plus one per retry. The one home of the rule."""
    return retry_count + 1


def current_attempt_of(status: Mapping[str, Any] | None) -> int:
    """`current_attempt` from a WorkOrder's raw status (as the API returns it)."""
    return current_attempt(int((status or {}).get("retryCount") or 0))


def format_time(value: datetime) -> str:
    """Render a timestamp the way the API server does: RFC 3339, UTC, `Z` suffix.

    Sub-second precision is kept (milliseconds) because retry times are honoured to
    within a second and rounding them to the second would make retries early.
    """
    value = value.astimezone(UTC)
    if value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def now_utc() -> datetime:
    """Now, truncated to the millisecond that status timestamps can hold."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
