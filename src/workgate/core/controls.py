"""Work controls as pure rules: failure policy, deadlines, TTL, queue order and admission.

`core.lifecycle` asks these questions; the shell supplies the facts (the clock, the queue
it sees). Nothing here talks to the API.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from workgate.api.workorder import (
    ExitCodeOperator,
    FailureAction,
    FailurePolicy,
    WorkOrderSpec,
)

# Failures that end the WorkOrder itself; they never count as an attempt's failure.
DEADLINE_EXCEEDED = "DeadlineExceeded"
ATTEMPT_DEADLINE_EXCEEDED = "AttemptDeadlineExceeded"
CANCELLED = "Cancelled"


def failure_action(
    policy: FailurePolicy | None, reason: str, exit_code: int | None
) -> FailureAction:
    """What the WorkOrder's failure policy says about a failed attempt: the first rule that
    matches decides (as a Job's podFailurePolicy); none matching means retry."""
    for rule in policy.rules if policy else ():
        if rule.on_exit_codes is not None:
            if exit_code is None:
                continue
            listed = exit_code in rule.on_exit_codes.values
            if listed == (rule.on_exit_codes.operator == ExitCodeOperator.IN):
                return FailureAction(rule.action)
        elif rule.on_reasons is not None and reason in rule.on_reasons:
            return FailureAction(rule.action)
    return FailureAction.RETRY


def deadline(start: datetime | None, seconds: int | None) -> datetime | None:
    if start is None or seconds is None:
        return None
    return start + timedelta(seconds=seconds)


def ttl_seconds(spec: WorkOrderSpec, default: int | None) -> int | None:
    return (
        spec.ttl_seconds_after_finished
        if spec.ttl_seconds_after_finished is not None
        else (default)
    )


# --- queues: per-work-type concurrency limits ------------------------------------------


@dataclass(frozen=True)
class QueueEntry:
    """One WorkOrder of a limited work type, as the queue sees it."""

    key: tuple[str, str]  # (namespace, name)
    priority: int
    created: str  # creationTimestamp (RFC 3339 sorts as text)
    active: bool  # holds a slot: admitted (PENDING) or running (CLAIMED)
    waiting: bool  # wants a slot: QUEUED, or new


@dataclass(frozen=True)
class QueueView:
    """What one WorkOrder's decision needs of its queue."""

    limit: int
    active: int  # slots held in its work type
    admitted: bool  # it holds a slot, or one is free for it now
    position: int  # among those waiting, 1 first; 0 when admitted


def queue_order(entry: QueueEntry) -> tuple[int, str, tuple[str, str]]:
    """Higher priority first, then oldest, then by name (a total order)."""
    return (-entry.priority, entry.created, entry.key)


def admit(entries: Iterable[QueueEntry], limit: int) -> dict[tuple[str, str], QueueView]:
    """Who may run in one limited work type: those already holding a slot, then the
    waiting ones in queue order while slots are free. Every entry gets its view."""
    entries = list(entries)
    active = sum(1 for e in entries if e.active)
    free = max(0, limit - active)
    views: dict[tuple[str, str], QueueView] = {}
    waiting = sorted((e for e in entries if e.waiting and not e.active), key=queue_order)
    for index, entry in enumerate(waiting):
        admitted = index < free
        views[entry.key] = QueueView(limit, active, admitted, 0 if admitted else index + 1 - free)
    for entry in entries:
        if entry.active:
            views[entry.key] = QueueView(limit, active, True, 0)
    return views
