"""The admission verdicts the controller may reuse (operator/judging.Permits): pure."""

from __future__ import annotations

import pytest

from workgate.core.approvals import Sender
from workgate.operator import judging
from workgate.operator.judging import Permits

ALICE = Sender("alice", ("team", "system:authenticated"))


def key(uid: str = "u1", sender: Sender = ALICE, waitpoint: str = "wo.go") -> judging.PermitKey:
    return Permits.key(uid, "ns", waitpoint, sender)


def test_a_permit_is_taken_once_for_the_very_signal_and_sender() -> None:
    permits = Permits()
    permits.grant(key())
    assert not permits.take(key(uid="u2"))  # another Signal
    assert not permits.take(key(sender=Sender("bob", ALICE.groups)))  # another user
    assert not permits.take(key(sender=Sender("alice", ("team",))))  # fewer groups
    assert not permits.take(key(waitpoint="wo.other"))  # another waitpoint
    # The groups as a set: the order the annotation lists them in does not matter.
    assert permits.take(key(sender=Sender("alice", ("system:authenticated", "team"))))
    assert not permits.take(key())  # used up
    assert permits.reused == 1 and len(permits) == 0


def test_a_permit_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(judging.time, "monotonic", lambda: clock[0])
    permits = Permits(seconds=30)
    permits.grant(key("fresh"))
    permits.grant(key("stale"))
    clock[0] += 30
    assert permits.take(key("fresh"))
    clock[0] += 0.001
    assert not permits.take(key("stale"))
    assert permits.reused == 1


def test_permits_are_bounded_oldest_first() -> None:
    permits = Permits(entries=3)
    for uid in ("a", "b", "c", "d"):
        permits.grant(key(uid))
    assert len(permits) == 3
    assert not permits.take(key("a"))
    assert all(permits.take(key(uid)) for uid in ("b", "c", "d"))
