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
    existing = get_condition(conditions, type_)
    unchanged = existing is not None and existing.status == status
    updated = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        observed_generation=generation,
        last_transition_time=existing.last_transition_time if existing and unchanged else now,
    )
    if existing is None:
        return [*conditions, updated]
    return [updated if c.type == type_ else c for c in conditions]


def drop_condition(conditions: list[Condition], type_: str) -> list[Condition]:
    """Return `conditions` without `type_` (an abnormal-true condition that is not True)."""
    return [c for c in conditions if c.type != type_]


def get_condition(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)
