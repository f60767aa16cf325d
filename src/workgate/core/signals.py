"""Waitpoint tokens, signal proofs and resume conditions: pure functions.

A waitpoint's token is HMAC(operator key, waitpoint identity), minted once at creation
and stored only in the waitpoint's Secret. A reviewer never sends the token: a Signal
carries a proof, HMAC-SHA256 keyed by the token over the signal's canonical content
(which includes the sender, so nobody can replay another user's proof). Every comparison
of secret material is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

TOKEN_ALGORITHMS = {"sha256": hashlib.sha256, "sha1": hashlib.sha1}


class Refusal(StrEnum):
    """Why a signal is refused; used as the Signal's status reason and in messages."""

    WAITPOINT_NOT_FOUND = "WaitpointNotFound"
    WAITPOINT_CLOSED = "WaitpointClosed"
    INVALID_PROOF = "InvalidProof"
    REPLAYED = "Replayed"
    UNEXPECTED_SIGNAL = "UnexpectedSignal"
    SENDER_MISMATCH = "SenderMismatch"
    NOT_READY = "WaitpointNotReady"


def mint_token(
    operator_key: bytes, namespace: str, name: str, uid: str, algorithm: str = "sha256"
) -> str:
    """The token: deterministic for one waitpoint object, unguessable without the key."""
    digest = TOKEN_ALGORITHMS[algorithm]
    message = f"workgate.io/waitpoint-token\x00{namespace}\x00{name}\x00{uid}".encode()
    return hmac.new(operator_key, message, digest).hexdigest()


def payload_digest(payload: str) -> str:
    return hashlib.sha256(payload.encode()).hexdigest()


def canonical_signal(
    *, namespace: str, waitpoint: str, signal_name: str, nonce: str, payload: str, sender: str
) -> bytes:
    return json.dumps(
        {
            "namespace": namespace,
            "waitpoint": waitpoint,
            "signal": signal_name,
            "nonce": nonce,
            "payloadSha256": payload_digest(payload),
            "sender": sender,
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()


def signal_proof(token: str, **content: str) -> str:
    """What a reviewer puts in `spec.proof` (see `canonical_signal` for the content keys)."""
    return hmac.new(token.encode(), canonical_signal(**content), hashlib.sha256).hexdigest()


def proof_matches(token: str, proof: str, **content: str) -> bool:
    return hmac.compare_digest(signal_proof(token, **content), proof)


@dataclass(frozen=True)
class SignalCheck:
    """Everything needed to judge one signal against its waitpoint."""

    namespace: str
    waitpoint: str
    waitpoint_state: str | None  # None: not initialised yet (no token minted)
    required_signal_names: Sequence[str]
    used_nonces: Iterable[str]
    token: str
    signal_name: str
    nonce: str
    payload: str
    proof: str
    sender: str  # the authenticated user who created the Signal
    claimed_sender: str | None  # what the Signal says about its sender


def judge_signal(check: SignalCheck) -> tuple[Refusal, str] | None:
    """None if the signal may be accepted, else the refusal reason and a clear message."""
    if check.waitpoint_state is None:
        return Refusal.NOT_READY, f"waitpoint {check.waitpoint} has no token yet; retry shortly"
    if check.waitpoint_state == "closed":
        return Refusal.WAITPOINT_CLOSED, f"waitpoint {check.waitpoint} is closed"
    if check.claimed_sender is not None and not hmac.compare_digest(
        check.claimed_sender.encode(), check.sender.encode()
    ):
        return Refusal.SENDER_MISMATCH, "the signal names a sender other than its creator"
    content = {
        "namespace": check.namespace,
        "waitpoint": check.waitpoint,
        "signal_name": check.signal_name,
        "nonce": check.nonce,
        "payload": check.payload,
        "sender": check.sender,
    }
    if not proof_matches(check.token, check.proof, **content):
        return (
            Refusal.INVALID_PROOF,
            f"the proof does not match waitpoint {check.waitpoint}'s token for this signal "
            "and sender",
        )
    if any(hmac.compare_digest(check.nonce.encode(), used.encode()) for used in check.used_nonces):
        return Refusal.REPLAYED, f"nonce already accepted by waitpoint {check.waitpoint}"
    if check.required_signal_names and check.signal_name not in check.required_signal_names:
        wanted = ", ".join(check.required_signal_names)
        return (
            Refusal.UNEXPECTED_SIGNAL,
            f"waitpoint {check.waitpoint} waits for {wanted}, not {check.signal_name}",
        )
    return None


def is_satisfied(required_signal_names: Sequence[str], received: Iterable[str]) -> bool:
    """Empty requirements: any one signal satisfies. Otherwise every named signal must arrive."""
    names = set(received)
    if not required_signal_names:
        return bool(names)
    return set(required_signal_names) <= names
