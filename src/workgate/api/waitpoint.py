"""Waitpoint and Signal: human-in-the-loop gates on a WorkOrder."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field
from pydantic.config import JsonDict

from workgate.api.common import CamelModel, Condition, Timestamp

SIGNAL_NAME_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
MAX_PAYLOAD_BYTES = 4096
SignalName = Annotated[str, Field(min_length=1, max_length=63, pattern=SIGNAL_NAME_PATTERN)]


class WaitpointState(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    CLOSED = "closed"


class CloseReason(StrEnum):
    SATISFIED = "Satisfied"
    EXPIRED = "Expired"
    CANCELLED = "Cancelled"


class WaitpointStage(StrEnum):
    BEFORE_EXECUTION = "BeforeExecution"
    AFTER_SUCCESS = "AfterSuccess"
    DYNAMIC = "Dynamic"


class TimeoutPolicy(StrEnum):
    FAIL = "Fail"
    CONTINUE = "Continue"


_IMMUTABLE: JsonDict = {
    "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "spec is immutable"}]
}


class WaitpointSpec(CamelModel):
    """The resume condition of one waitpoint. Immutable: the bar cannot be lowered later."""

    work_order_name: str = Field(
        description="Name of the WorkOrder (same namespace) whose execution this point suspends.",
        min_length=1,
        max_length=253,
    )
    key: str = Field(
        description="Key addressing this waitpoint among the WorkOrder's waitpoints.",
        min_length=1,
        max_length=63,
        pattern=SIGNAL_NAME_PATTERN,
    )
    stage: WaitpointStage = Field(
        default=WaitpointStage.DYNAMIC,
        description=(
            "Where the WorkOrder stops: a declared gate's stage (BeforeExecution, "
            "AfterSuccess), or Dynamic for a suspension requested by a claimant."
        ),
    )
    required_signal_names: list[SignalName] = Field(
        default_factory=list,
        max_length=32,
        description=(
            "Signal names the resume condition waits for; all must arrive. EMPTY means any "
            "signal satisfies it (wildcard), not that there is no waitpoint."
        ),
    )
    timeout_seconds: int | None = Field(
        default=None,
        ge=1,
        le=30 * 86400,
        description="Seconds after activation at which the waitpoint expires; none = never.",
    )
    on_timeout: TimeoutPolicy = Field(
        default=TimeoutPolicy.FAIL,
        description="What the WorkOrder does when this waitpoint expires: Fail or Continue.",
    )


class ReceivedSignal(CamelModel):
    """One accepted signal, as recorded on its waitpoint."""

    name: str = Field(description="Signal name.")
    signal: str = Field(description="Name of the Signal object that delivered it.")
    sender: str = Field(description="The user who created the Signal, from admission.")
    received_at: Timestamp = Field(description="When the signal was accepted.")
    payload_digest: str = Field(description="SHA-256 of the payload, hex.")
    nonce: str = Field(description="The signal's nonce; a nonce is accepted once (no replay).")


class WaitpointStatus(CamelModel):
    """Observed state of the waitpoint, written only by the operator."""

    state: WaitpointState | None = Field(
        default=None, description="Current state: pending, active or closed."
    )
    created_at: Timestamp | None = Field(
        default=None, description="When the waitpoint record (and its token) was first written."
    )
    activated_at: Timestamp | None = Field(
        default=None, description="When the waitpoint was activated; unset while pending."
    )
    expires_at: Timestamp | None = Field(
        default=None, description="Scheduled expiration; unset if no timeout is configured."
    )
    closed_at: Timestamp | None = Field(default=None, description="When the waitpoint closed.")
    close_reason: CloseReason | None = Field(
        default=None, description="Why it closed: Satisfied, Expired or Cancelled."
    )
    token_algorithm: str | None = Field(
        default=None, description="HMAC algorithm the token was minted with: sha256 or sha1."
    )
    sealed_token: str | None = Field(
        default=None,
        description=(
            "Dynamic waitpoints only: the token sealed to the suspending claimant's public "
            "key (X25519, AES-GCM). Only that claimant can open it; the token itself is "
            "only in the Secret."
        ),
    )
    token_secret_name: str | None = Field(
        default=None,
        description="Secret holding the HMAC token a reviewer must prove to deliver a signal.",
    )
    received_signals: list[ReceivedSignal] = Field(
        default_factory=list, description="Signals accepted so far (buffered while pending)."
    )
    received_count: int = Field(default=0, ge=0, description="Number of accepted signals.")
    observed_generation: int | None = Field(default=None, description="Generation observed.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Standard conditions: Ready (True once closed as satisfied).",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )


class Waitpoint(CamelModel):
    """A point where a WorkOrder's execution is suspended until signals arrive."""

    spec: WaitpointSpec = Field(json_schema_extra=_IMMUTABLE)
    status: WaitpointStatus | None = None


class SignalPhase(StrEnum):
    PENDING = "Pending"
    ACCEPTED = "Accepted"
    REJECTED = "Rejected"


class SignalSpec(CamelModel):
    """One signal for a waitpoint, with proof that the sender holds the waitpoint's token."""

    waitpoint_name: str = Field(
        description="Name of the Waitpoint (same namespace) the signal is for.",
        min_length=1,
        max_length=253,
    )
    signal_name: str = Field(
        description="Name of the signal, matched against the waitpoint's requiredSignalNames.",
        min_length=1,
        max_length=63,
        pattern=SIGNAL_NAME_PATTERN,
    )
    payload: str = Field(
        default="", max_length=MAX_PAYLOAD_BYTES, description="A small free-form payload."
    )
    nonce: str = Field(
        description="A fresh random value; each nonce is accepted once per waitpoint.",
        min_length=16,
        max_length=128,
        pattern=r"^[A-Za-z0-9_-]+$",
    )
    proof: str = Field(
        description=(
            "Hex HMAC of the signal's content keyed by the waitpoint token, proving possession "
            "of the token without revealing it (see `kubectl workgate signal`)."
        ),
        pattern=r"^[0-9a-f]{40,128}$",
    )


class SignalStatus(CamelModel):
    """Whether the operator accepted the signal, and why not if it did not."""

    phase: SignalPhase | None = Field(default=None, description="Pending, Accepted or Rejected.")
    reason: str | None = Field(default=None, description="CamelCase reason for the phase.")
    message: str | None = Field(default=None, description="Human readable details.")
    observed_generation: int | None = Field(default=None, description="Generation observed.")


class Signal(CamelModel):
    """Delivers a named signal to a Waitpoint."""

    spec: SignalSpec = Field(json_schema_extra=_IMMUTABLE)
    status: SignalStatus | None = None
