"""When a waitpoint closes, and what its status says meanwhile: a pure function.

`settle(spec, status, now, generation)` takes the status after the signals of this round
were recorded and returns it with the approvals tallied, the waitpoint closed if it was
rejected, approved or expired (only once active: signals to a pending waitpoint are
buffered), its Ready condition, the Events to post and when to look again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from workgate.api.common import ConditionStatus, format_time
from workgate.api.waitpoint import CloseReason, WaitpointSpec, WaitpointState, WaitpointStatus
from workgate.core import approvals
from workgate.core.conditions import set_condition


@dataclass
class Settled:
    status: WaitpointStatus
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    wake_at: datetime | None = None


def _close(status: WaitpointStatus, reason: CloseReason, now: datetime) -> None:
    status.state = WaitpointState.CLOSED
    status.close_reason = reason
    status.closed_at = now


def settle(
    spec: WaitpointSpec, before: WaitpointStatus, now: datetime, generation: int | None
) -> Settled:
    status = before.model_copy(deep=True)
    out = Settled(status)
    votes = [approvals.Vote(r.name, r.sender) for r in status.received_signals]
    tallies = approvals.tally(spec, spec.required_signal_names, votes)
    status.approvals = tallies
    if status.state == WaitpointState.ACTIVE:
        rejected = approvals.rejection(spec, votes)
        expires = status.expires_at
        if rejected is not None:
            _close(status, CloseReason.REJECTED, now)
            payload = f": {status.rejection.payload}" if status.rejection else ""
            out.events.append(("Warning", "Rejected", f"rejected by {rejected.sender}{payload}"))
        elif approvals.is_approved(tallies):
            _close(status, CloseReason.SATISFIED, now)
            who = sorted({s for t in tallies for s in t.approved_by})
            out.events.append(("Normal", "Satisfied", f"approved by {', '.join(who)}"))
        elif expires is not None and now >= expires:
            _close(status, CloseReason.EXPIRED, now)
            out.events.append(
                ("Warning", "Expired", f"expired at {format_time(expires)} ({spec.on_timeout})")
            )
        elif expires is not None:
            out.wake_at = expires
    closed = status.state == WaitpointState.CLOSED
    status.waiting_for = None if closed else (approvals.waiting_for(spec, tallies) or None)
    status.received_count = len(status.received_signals)
    status.observed_generation = generation
    if closed:
        reason = str(status.close_reason or "Closed")
        ready = ConditionStatus.TRUE if reason == CloseReason.SATISFIED else ConditionStatus.FALSE
        approved_by = sorted({s for t in tallies for s in t.approved_by})
        if reason == CloseReason.SATISFIED:
            message = f"approved by {', '.join(approved_by)}"
        elif reason == CloseReason.REJECTED and status.rejection is not None:
            message = f"rejected by {status.rejection.by}"
        else:
            message = f"closed: {reason}"
    else:
        ready, reason = ConditionStatus.FALSE, "Waiting"
        message = f"waiting for {status.waiting_for}" if status.waiting_for else "waiting"
        if status.state != WaitpointState.ACTIVE:
            reason, message = "Pending", f"not active yet; {message}"
    status.conditions = set_condition(
        status.conditions, "Ready", ready, reason, message, generation=generation, now=now
    )
    return out
