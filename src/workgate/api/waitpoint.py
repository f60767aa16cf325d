"""Waitpoint and Signal: human-in-the-loop gates on a WorkOrder."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field, JsonValue
from pydantic.config import JsonDict

from workgate.api.common import CamelModel, Condition, Timestamp

SIGNAL_NAME_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
MAX_PAYLOAD_BYTES = 4096
SignalName = Annotated[str, Field(min_length=1, max_length=63, pattern=SIGNAL_NAME_PATTERN)]
DEFAULT_REJECT_SIGNAL = "reject"
MAX_APPROVERS = 32
MAX_REQUIRED_APPROVALS = 16
# Every signal name times requiredApprovals, plus the one rejection: the most a waitpoint
# ever records (each sender counts once per name; refused signals are not recorded).
MAX_RECORDED_DECISIONS = 64
MAX_RECEIVED_SIGNALS = MAX_RECORDED_DECISIONS + 1


class WaitpointState(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    CLOSED = "closed"


class CloseReason(StrEnum):
    SATISFIED = "Satisfied"
    REJECTED = "Rejected"
    EXPIRED = "Expired"
    CANCELLED = "Cancelled"


class WaitpointStage(StrEnum):
    BEFORE_EXECUTION = "BeforeExecution"
    AFTER_SUCCESS = "AfterSuccess"
    DYNAMIC = "Dynamic"


class TimeoutPolicy(StrEnum):
    FAIL = "Fail"
    CONTINUE = "Continue"


class SubjectKind(StrEnum):
    USER = "User"
    GROUP = "Group"
    SERVICE_ACCOUNT = "ServiceAccount"


class Subject(CamelModel):
    """Who may decide, written as an RBAC subject (as in a RoleBinding's `subjects`)."""

    kind: SubjectKind = Field(description="User, Group or ServiceAccount.")
    name: str = Field(min_length=1, max_length=253, description="User, group or account name.")
    namespace: str | None = Field(
        default=None,
        max_length=63,
        description="ServiceAccount only: its namespace (default: the waitpoint's).",
    )


# The rules shared by a declared gate and the Waitpoint made from it.
DECISION_RULES: list[JsonValue] = [
    {
        "rule": (
            "!has(self.requiredSignalNames) || !(self.rejectSignalName in self.requiredSignalNames)"
        ),
        "message": "rejectSignalName must not be one of requiredSignalNames",
    },
    {
        "rule": (
            "(has(self.requiredSignalNames) && size(self.requiredSignalNames) > 0"
            " ? size(self.requiredSignalNames) : 1)"
            f" * self.requiredApprovals <= {MAX_RECORDED_DECISIONS}"
        ),
        "message": (
            f"requiredSignalNames x requiredApprovals must be at most {MAX_RECORDED_DECISIONS}"
        ),
    },
]


class ApprovalRules(CamelModel):
    """Who may decide a waitpoint and how many must agree."""

    approvers: list[Subject] = Field(
        default_factory=list,
        max_length=MAX_APPROVERS,
        description=(
            "Who may decide (approve or reject), as RBAC subjects: a User, a Group, or a "
            "ServiceAccount. Empty: anyone RBAC allows. Either way the sender must also be "
            "allowed the verb `approve` on this waitpoint (`kubectl auth can-i approve "
            "waitpoints.workgate.io/NAME`): a list narrows RBAC, it never widens it."
        ),
    )
    required_approvals: int = Field(
        default=1,
        ge=1,
        le=MAX_REQUIRED_APPROVALS,
        description=(
            "Distinct senders needed for each required signal name (for any name when "
            "requiredSignalNames is empty). A sender counts once per signal name, however "
            "often they sign."
        ),
    )
    reject_signal_name: SignalName = Field(
        default=DEFAULT_REJECT_SIGNAL,
        description=(
            "The signal name that rejects: one such signal from someone allowed to decide "
            "closes the waitpoint as Rejected and fails the WorkOrder, recording who "
            "rejected, when, and the payload."
        ),
    )
    forbid_self_approval: bool = Field(
        default=False,
        description=(
            "Refuse signals from the identity that created the WorkOrder (recorded at "
            "admission in its workgate.io/created-by annotation): separation of duties, so "
            "nobody approves their own work. Declared gates default to true."
        ),
    )


_IMMUTABLE_RULE: JsonDict = {"rule": "self == oldSelf", "message": "spec is immutable"}
_IMMUTABLE: JsonDict = {"x-kubernetes-validations": [_IMMUTABLE_RULE]}
_SPEC_RULES: JsonDict = {"x-kubernetes-validations": [_IMMUTABLE_RULE, *DECISION_RULES]}


class WaitpointSpec(ApprovalRules):
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
    sender: str = Field(
        description="The verified user who created the Signal (recorded at admission)."
    )
    received_at: Timestamp = Field(description="When the signal was accepted.")
    payload_digest: str = Field(description="SHA-256 of the payload, hex.")
    nonce: str = Field(description="The signal's nonce; a nonce is accepted once (no replay).")


class Rejection(CamelModel):
    """Who rejected a waitpoint, when, and why (the payload)."""

    waitpoint: str = Field(description="The rejected waitpoint.")
    signal: str = Field(description="Name of the Signal object that rejected it.")
    by: str = Field(description="The verified user who rejected it.")
    at: Timestamp = Field(description="When the rejection was accepted.")
    payload: str = Field(
        default="", max_length=MAX_PAYLOAD_BYTES, description="The rejecting signal's payload."
    )


class Tally(CamelModel):
    """Approvals counted for one signal name."""

    name: str = Field(description="Signal name (`*` when any name counts).")
    required: int = Field(ge=1, description="Distinct senders needed.")
    approved_by: list[str] = Field(
        default_factory=list,
        max_length=MAX_REQUIRED_APPROVALS,
        description="Verified senders counted so far, in order of arrival.",
    )
    remaining: int = Field(ge=0, description="How many more distinct senders are needed.")


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
        default=None, description="Why it closed: Satisfied, Rejected, Expired or Cancelled."
    )
    token_algorithm: str | None = Field(
        default=None, description="HMAC algorithm the token was minted with: sha256 or sha1."
    )
    token_key_id: str | None = Field(
        default=None,
        description=(
            "Id of the operator key that minted the token (the token starts with it): signals "
            "are verified with that key even after `workgate token-key rotate`."
        ),
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
    author: str | None = Field(
        default=None,
        description=(
            "Who created the WorkOrder (its workgate.io/created-by annotation, recorded at "
            "admission); unset when unknown. Self-approval rules compare senders with it."
        ),
    )
    received_signals: list[ReceivedSignal] = Field(
        default_factory=list,
        max_length=MAX_RECEIVED_SIGNALS,
        description=(
            "Signals accepted so far (buffered while pending): at most one per sender and "
            "signal name, and only as many as the waitpoint needs, so it stays small however "
            "many signals arrive."
        ),
    )
    received_count: int = Field(default=0, ge=0, description="Number of accepted signals.")
    approvals: list[Tally] = Field(
        default_factory=list,
        max_length=32,
        description="Per required signal name: who has approved and how many more are needed.",
    )
    waiting_for: str | None = Field(
        default=None,
        max_length=1024,
        description=(
            "What the waitpoint still waits for, e.g. `approve: 1 more (approved: alice; "
            "approvers: Group release)`; unset once closed."
        ),
    )
    rejection: Rejection | None = Field(
        default=None, description="Set when the waitpoint closed as Rejected."
    )
    observed_generation: int | None = Field(default=None, description="Generation observed.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description=(
            "Standard conditions: Ready (True once closed as satisfied; False with reason "
            "Waiting, Rejected, Expired or Cancelled)."
        ),
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )


class Waitpoint(CamelModel):
    """A point where a WorkOrder's execution is suspended until signals arrive.

    Approval model: a signal counts only when (1) it proves the waitpoint's token (held in
    its Secret); (2) its sender, as authenticated by the API server and recorded at
    admission, is allowed the RBAC verb `approve` on this waitpoint (SubjectAccessReview,
    granted by the workgate-reviewer role, not by edit or workgate-author); (3) the sender
    is one of `approvers` when that list is set; (4) with `forbidSelfApproval`, the sender
    did not create the WorkOrder (separation of duties); (5) the sender has not already
    counted for that signal name. It opens once every required name has
    `requiredApprovals` distinct senders; one `rejectSignalName` signal closes it as
    Rejected and fails the WorkOrder. `status` records who approved and who is still
    needed.
    """

    spec: WaitpointSpec = Field(json_schema_extra=_SPEC_RULES)
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
        description=(
            "Name of the signal, matched against the waitpoint's requiredSignalNames; the "
            "waitpoint's rejectSignalName (default `reject`) rejects it."
        ),
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
    """Delivers a named signal to a Waitpoint: an approval, or a rejection.

    Create it with `kubectl workgate approve|reject|signal`. Its annotations
    workgate.io/sender and workgate.io/sender-groups must be the creating user's own name
    and groups (admission refuses anything else); the proof binds the sender, so nobody can
    replay another user's signal.
    """

    spec: SignalSpec = Field(json_schema_extra=_IMMUTABLE)
    status: SignalStatus | None = None
