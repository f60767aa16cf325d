"""Shared building blocks of the workgate API types.

The Pydantic models in this package are the single source of truth for the custom
resources: `workgate.api.crdgen` turns them into the CRD YAML under `crds/`.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer
from pydantic.alias_generators import to_camel

from workgate.api.wire import API_VERSION as API_VERSION
from workgate.api.wire import CATEGORY as CATEGORY
from workgate.api.wire import GROUP as GROUP
from workgate.api.wire import LABEL_MANAGED_BY as LABEL_MANAGED_BY
from workgate.api.wire import LABEL_WORKORDER as LABEL_WORKORDER
from workgate.api.wire import MANAGED_BY as MANAGED_BY
from workgate.api.wire import VERSION as VERSION
from workgate.api.wire import format_time as format_time
from workgate.api.wire import now_utc as now_utc
from workgate.api.wire import parse_time as parse_time


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
