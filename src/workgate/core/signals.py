"""Waitpoint tokens, signal proofs and resume conditions: pure functions.

A waitpoint's token is HMAC(operator key, waitpoint identity), prefixed with the id of
that key, minted once at creation and stored only in the waitpoint's Secret. A reviewer
never sends the token: a Signal carries a proof, HMAC-SHA256 keyed by the token over the
signal's canonical content (which includes the sender, so nobody can replay another user's
proof). Every comparison of secret material is constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

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
    # Deciding (see core.approvals): who may, and how often.
    SENDER_UNVERIFIED = "SenderUnverified"
    NOT_PERMITTED = "NotPermitted"
    NOT_AN_APPROVER = "NotAnApprover"
    SELF_APPROVAL = "SelfApproval"
    AUTHOR_UNKNOWN = "AuthorUnknown"
    ALREADY_COUNTED = "AlreadyCounted"
    ALREADY_SATISFIED = "AlreadySatisfied"
    ALREADY_REJECTED = "AlreadyRejected"


def mint_token(
    operator_key: bytes,
    namespace: str,
    name: str,
    uid: str,
    algorithm: str = "sha256",
    key_id: str = "",
) -> str:
    """The token: deterministic for one waitpoint object, unguessable without the key.

    It starts with `<key id>.` so its holder can tell which operator key minted it (tokens
    of the legacy key, id "", are the bare hex digest).
    """
    digest = TOKEN_ALGORITHMS[algorithm]
    message = f"workgate.io/waitpoint-token\x00{namespace}\x00{name}\x00{uid}".encode()
    token = hmac.new(operator_key, message, digest).hexdigest()
    return f"{key_id}.{token}" if key_id else token


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
    reject_signal_name: str
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
    if (
        check.required_signal_names
        and check.signal_name not in check.required_signal_names
        and check.signal_name != check.reject_signal_name
    ):
        wanted = ", ".join(check.required_signal_names)
        return (
            Refusal.UNEXPECTED_SIGNAL,
            f"waitpoint {check.waitpoint} waits for {wanted} (or {check.reject_signal_name} "
            f"to reject), not {check.signal_name}",
        )
    return None


# --- handing a dynamic waitpoint's token to the claimant that suspended at it ---------
# The claimant puts an X25519 public key on the Waitpoint it creates; the operator seals
# the token to that key (ephemeral X25519 + HKDF-SHA256 + AES-256-GCM, bound to the
# waitpoint's uid). Only the claimant's private key opens it: no RBAC on Secrets needed.

_SEAL_INFO = b"workgate.io/waitpoint-token-seal/v1"


def _seal_key(shared: bytes, uid: str) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=uid.encode(), info=_SEAL_INFO).derive(shared)


def seal_token(token: str, recipient_public_key: str, uid: str) -> str:
    """Encrypt `token` so that only the holder of the recipient's private key can read it."""
    recipient = X25519PublicKey.from_public_bytes(base64.b64decode(recipient_public_key))
    ephemeral = X25519PrivateKey.generate()
    key = _seal_key(ephemeral.exchange(recipient), uid)
    nonce = os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, token.encode(), uid.encode())
    public = ephemeral.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(public + nonce + sealed).decode()


def recipient_keypair() -> tuple[bytes, str]:
    """A fresh X25519 key pair: (raw private bytes, base64 public key for the annotation)."""
    key = X25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return key.private_bytes_raw(), base64.b64encode(public).decode()


def open_sealed_token(sealed: str, private_key: bytes, uid: str) -> str:
    """The claimant's side of `seal_token` (`private_key`: raw X25519 private bytes)."""

    raw = base64.b64decode(sealed)
    ephemeral, nonce, body = X25519PublicKey.from_public_bytes(raw[:32]), raw[32:44], raw[44:]
    key = _seal_key(X25519PrivateKey.from_private_bytes(private_key).exchange(ephemeral), uid)
    return AESGCM(key).decrypt(nonce, body, uid.encode()).decode()
