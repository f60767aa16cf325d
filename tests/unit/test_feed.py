"""What an agent's feed offers to claim (agent/feed.py), from the views its watches fill."""

from __future__ import annotations

import random
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


def reference(feed: WorkFeed) -> list[Candidate]:
    """What claimable() must offer, the slow way: filter all, then sort all."""
    items = dict(feed.workorders.items)
    leased, passed = feed.leases.items, feed._passed
    work = [
        c
        for key, c in items.items()
        if isinstance(c, Candidate) and leased.get(key) != c.uid and passed.get(key) is not c
    ]
    if not work:
        return []
    top = max(c.priority for c in work)
    tier = sorted((c for c in work if c.priority == top), key=lambda c: (c.created, c.name))
    return tier[:OLDEST_FIRST]


def test_the_kept_order_matches_filtering_and_sorting_everything() -> None:
    """Random arrivals, changes (priority, a namesake under a new uid), departures, claims
    and pass-overs: the feed offers exactly what a full filter and sort would."""
    rng = random.Random(7)
    feed = feed_of()
    for step in range(3000):
        name = f"w{rng.randrange(400):03}"
        key = ("ns", name)
        roll = rng.random()
        if roll < 0.45:  # ADDED or MODIFIED: a new value, maybe another priority or uid
            created = f"2026-01-01T{rng.randrange(24):02}:{rng.randrange(60):02}:00Z"
            feed.workorders.items[key] = Candidate(
                "ns", name, f"uid-{name}-{rng.randrange(2)}", created, str(step), "t", 0, 30,
                rng.choice((0, 0, 0, 1, -1)),
            )  # fmt: skip
        elif roll < 0.7:  # DELETED, or no longer claimable
            feed.workorders.items.pop(key, None)
        elif roll < 0.85:  # a claim Lease appears or goes
            current = feed.workorders.items.get(key)
            if current is not None and rng.random() < 0.7:
                feed.leases.items[key] = current.uid  # type: ignore[attr-defined]
            else:
                feed.leases.items.pop(key, None)
        else:
            offered = feed.claimable()
            assert offered == reference(feed), step
            if offered:
                feed.pass_over(rng.choice(offered))
    assert feed.claimable() == reference(feed)


def workorder_event(name: str, version: str, **spec: Any) -> dict[str, Any]:
    meta = {"namespace": "ns", "name": name, "uid": f"uid-{name}", "resourceVersion": version}
    return {"metadata": meta, "spec": {"workType": "t", **spec}, "status": {}}


def lease_event(name: str, uid: str, **annotations: str) -> dict[str, Any]:
    ref = {"controller": True, "name": name, "uid": uid}
    meta = {"namespace": "ns", "name": f"{name}-claim", "uid": f"lease-{uid}",
            "ownerReferences": [ref], "annotations": annotations}  # fmt: skip
    return {"metadata": meta, "spec": {"holderIdentity": "someone"}}


def test_only_what_may_bring_work_wakes_a_waiting_agent() -> None:
    """A waiting agent has no work: new or changed work, or a claim that ends, may bring
    some; another claim, its report, or work that leaves cannot, and wake no one."""
    feed = feed_of()
    woke: list[str] = []

    def deliver(view: Any, what: str, type_: str, body: dict[str, Any]) -> None:
        feed.changed.clear()
        view._apply(type_, body)
        if feed.changed.is_set():
            woke.append(what)

    wos, leases = feed.workorders, feed.leases
    deliver(wos, "work added", "ADDED", workorder_event("a", "1"))
    deliver(leases, "claimed", "ADDED", lease_event("a", "uid-a"))
    deliver(leases, "reported", "MODIFIED", lease_event("a", "uid-a", **{"x": "y"}))
    deliver(wos, "suspended", "MODIFIED", workorder_event("a", "2", suspend=True))
    deliver(wos, "resumed", "MODIFIED", workorder_event("a", "3"))
    deliver(wos, "unchanged", "MODIFIED", workorder_event("a", "3"))
    deliver(leases, "claim released", "DELETED", lease_event("a", "uid-a"))
    deliver(leases, "claimed again", "ADDED", lease_event("a", "uid-a"))
    deliver(leases, "a namesake's claim instead", "MODIFIED", lease_event("a", "uid-old"))
    deliver(wos, "left", "DELETED", workorder_event("a", "4"))
    assert woke == ["work added", "resumed", "claim released", "a namesake's claim instead"]
