"""Standard Kubernetes conditions, updated without churning lastTransitionTime."""

from __future__ import annotations

from datetime import datetime

from workgate.api.common import Condition, ConditionStatus


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    *,
    generation: int | None,
    now: datetime,
) -> list[Condition]:
    """Return `conditions` with `type_` set; the transition time moves only on a status change."""
    result: list[Condition] = []
    found = False
    for existing in conditions:
        if existing.type != type_:
            result.append(existing)
            continue
        found = True
        changed = existing.status != status
        result.append(
            Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message,
                observed_generation=generation,
                last_transition_time=now if changed else existing.last_transition_time,
            )
        )
    if not found:
        result.append(
            Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message,
                observed_generation=generation,
                last_transition_time=now,
            )
        )
    return result


def get_condition(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)
