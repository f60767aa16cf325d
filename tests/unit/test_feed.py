"""What an agent's feed offers to claim (agent/feed.py), from the views its watches fill."""

from __future__ import annotations

from typing import Any

from workgate.agent.feed import OLDEST_FIRST, Candidate, WorkFeed


def candidate(name: str, created: str, priority: int = 0) -> Candidate:
    return Candidate("ns", name, f"uid-{name}", created, "1", "t", 0, 30, priority)


def feed_of(*candidates: Candidate, leased: dict[str, str] | None = None) -> WorkFeed:
    api: Any = None  # never started: its views are filled by hand
    feed = WorkFeed(api, "t", None)
    feed.workorders.items.update({("ns", c.name): c for c in candidates})
    feed.leases.items.update({("ns", k): v for k, v in (leased or {}).items()})
    return feed


def test_the_oldest_of_the_highest_priority_first_and_no_more_than_the_window() -> None:
    many = [candidate(f"w{i:03}", f"2026-01-01T00:{i // 60:02}:{i % 60:02}Z") for i in range(300)]
    urgent = [
        candidate("late", "2026-01-02T00:00:00Z", 5),
        candidate("early", "2026-01-01T23:00:00Z", 5),
    ]
    feed = feed_of(*reversed(many))
    offered = feed.claimable()
    assert len(offered) == OLDEST_FIRST
    assert [c.name for c in offered] == [c.name for c in many[:OLDEST_FIRST]]
    feed = feed_of(*many, *urgent, candidate("low", "2025-01-01T00:00:00Z", -1))
    assert [c.name for c in feed.claimable()] == ["early", "late"]


def test_what_a_lease_claims_or_was_passed_over_is_not_offered_until_it_changes() -> None:
    a, b, c = (candidate(n, f"2026-01-01T00:00:0{i}Z") for i, n in enumerate("abc"))
    feed = feed_of(a, b, c, leased={"a": "uid-a", "c": "uid-of-a-namesake"})
    assert [x.name for x in feed.claimable()] == ["b", "c"]  # a namesake's claim is not c's
    feed.pass_over(b)
    assert [x.name for x in feed.claimable()] == ["c"]
    changed = candidate("b", "2026-01-01T00:00:01Z")  # a new event: a new value
    feed.workorders.items[("ns", "b")] = changed
    assert [x.name for x in feed.claimable()] == ["b", "c"]
    assert feed_of().claimable() == []
