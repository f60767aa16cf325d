"""Tokens, proofs and resume conditions, without a cluster."""

import pytest

from workgate.core import signals as rules

KEY = b"k" * 32
CONTENT = {
    "namespace": "ns",
    "waitpoint": "wp",
    "signal_name": "approve",
    "nonce": "n" * 20,
    "payload": "ok",
    "sender": "alice",
}


def check(**overrides: object) -> rules.SignalCheck:
    token = rules.mint_token(KEY, "ns", "wp", "uid-1")
    fields = {
        "namespace": "ns",
        "waitpoint": "wp",
        "waitpoint_state": "active",
        "required_signal_names": ["approve"],
        "reject_signal_name": "reject",
        "used_nonces": [],
        "token": token,
        "signal_name": "approve",
        "nonce": "n" * 20,
        "payload": "ok",
        "proof": rules.signal_proof(token, **CONTENT),
        "sender": "alice",
        "claimed_sender": "alice",
    }
    fields.update(overrides)
    return rules.SignalCheck(**fields)  # type: ignore[arg-type]


def test_tokens_are_per_waitpoint_and_algorithm() -> None:
    token = rules.mint_token(KEY, "ns", "wp", "uid-1")
    assert len(token) == 64 and token == rules.mint_token(KEY, "ns", "wp", "uid-1")
    assert token != rules.mint_token(KEY, "ns", "wp", "uid-2")
    assert token != rules.mint_token(b"x" * 32, "ns", "wp", "uid-1")
    assert len(rules.mint_token(KEY, "ns", "wp", "uid-1", "sha1")) == 40


def test_a_valid_signal_passes() -> None:
    assert rules.judge_signal(check()) is None


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"waitpoint_state": None}, rules.Refusal.NOT_READY),
        ({"waitpoint_state": "closed"}, rules.Refusal.WAITPOINT_CLOSED),
        ({"claimed_sender": "mallory"}, rules.Refusal.SENDER_MISMATCH),
        ({"proof": "0" * 64}, rules.Refusal.INVALID_PROOF),
        ({"waitpoint": "other"}, rules.Refusal.INVALID_PROOF),  # misaddressed
        ({"payload": "tampered"}, rules.Refusal.INVALID_PROOF),
        (
            {"sender": "bob", "claimed_sender": "bob"},
            rules.Refusal.INVALID_PROOF,
        ),  # someone else's proof
        ({"used_nonces": ["n" * 20]}, rules.Refusal.REPLAYED),
    ],
)
def test_refusals(overrides: dict[str, object], reason: rules.Refusal) -> None:
    verdict = rules.judge_signal(check(**overrides))
    assert verdict is not None and verdict[0] == reason and verdict[1]


def test_unlisted_signal_names_are_refused_but_wildcards_take_any() -> None:
    token = rules.mint_token(KEY, "ns", "wp", "uid-1")
    content = {**CONTENT, "signal_name": "other"}
    proof = rules.signal_proof(token, **content)
    verdict = rules.judge_signal(check(signal_name="other", proof=proof))
    assert verdict is not None and verdict[0] == rules.Refusal.UNEXPECTED_SIGNAL
    assert (
        rules.judge_signal(check(signal_name="other", proof=proof, required_signal_names=[]))
        is None
    )


def test_sealed_token_opens_only_with_the_recipient_key_and_waitpoint() -> None:
    import base64

    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    def keypair() -> tuple[bytes, str]:
        key = X25519PrivateKey.generate()
        raw = key.private_bytes_raw()
        public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return raw, base64.b64encode(public).decode()

    mine, my_public = keypair()
    theirs, _ = keypair()
    token = rules.mint_token(KEY, "ns", "wp", "uid-1")
    sealed = rules.seal_token(token, my_public, "uid-1")
    assert token not in sealed and sealed != rules.seal_token(token, my_public, "uid-1")
    assert rules.open_sealed_token(sealed, mine, "uid-1") == token
    with pytest.raises(InvalidTag):
        rules.open_sealed_token(sealed, theirs, "uid-1")
    with pytest.raises(InvalidTag):
        rules.open_sealed_token(sealed, mine, "uid-2")  # bound to its waitpoint
