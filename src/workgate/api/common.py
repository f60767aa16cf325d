"""Shared building blocks of the workgate API types.

The Pydantic models in this package are the single source of truth for the custom
resources: `workgate.api.crdgen` turns them into the CRD YAML under `crds/`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer
from pydantic.alias_generators import to_camel

GROUP = "workgate.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "workgate"

# Labels and annotations the operator and agents put on the objects they create.
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "workgate"
LABEL_WORKORDER = f"{GROUP}/workorder"


class CamelModel(BaseModel):
    """Kubernetes-style camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        use_enum_values=True,
        extra="ignore",
    )

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


def format_time(value: datetime) -> str:
    """Render a timestamp the way the API server does: RFC 3339, UTC, `Z` suffix.

    Sub-second precision is kept (milliseconds) because retry times are honoured to
    within a second and rounding them to the second would make retries early.
    """
    value = value.astimezone(UTC)
    if value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


# Kubernetes `metav1.Time`: RFC 3339 in UTC. The API server accepts fractional seconds.
Timestamp = Annotated[
    datetime,
    PlainSerializer(format_time, return_type=str, when_used="json"),
    Field(json_schema_extra={"format": "date-time"}),
]


class Condition(CamelModel):
    """The standard Kubernetes condition shape (metav1.Condition)."""

    type: str = Field(
        description="Type of the condition, in CamelCase (e.g. Ready, Succeeded).",
        max_length=316,
    )
    status: ConditionStatus = Field(description="Status of the condition: True, False or Unknown.")
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="The .metadata.generation the condition was set from.",
    )
    last_transition_time: Timestamp = Field(
        description="When the condition last changed from one status to another."
    )
    reason: str = Field(
        description="A programmatic identifier, in CamelCase, for the last transition.",
        max_length=1024,
    )
    message: str = Field(
        default="",
        description="A human readable message with details about the transition.",
        max_length=32768,
    )


def now_utc() -> datetime:
    """Now, truncated to the millisecond that status timestamps can hold."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
