"""How agents spread over claimable work (agent/spread.py)."""

from __future__ import annotations

from dataclasses import dataclass

from workgate.agent.spread import BUSY_SECONDS, PEER_SECONDS, Peers, Ranking, spread_score

AGENTS = [f"system:serviceaccount:ns:agent/bench-{i}" for i in range(10)]


@dataclass(frozen=True)
class Work:
    uid: str


WORK = [Work(f"uid-{i}") for i in range(128)]


def test_agents_that_know_each_other_aim_at_different_work_at_once() -> None:
    peers = frozenset(AGENTS)
    picks = [Ranking(me, 0.5).choose(WORK, peers) for me in AGENTS]
    assert len({work.uid for work, _ in picks}) == len(AGENTS)
    assert all(delay == 0 for _, delay in picks)
    for me, (work, _) in zip(AGENTS, picks, strict=True):  # each its own: the lowest score
        assert min(AGENTS, key=lambda agent: spread_score(agent, work.uid)) == me


def test_others_work_waits_by_rank_and_nothing_is_owned_by_no_one() -> None:
    me, other = AGENTS[0], AGENTS[1]
    peers = frozenset({me, other})
    theirs = [w for w in WORK if spread_score(other, w.uid) < spread_score(me, w.uid)]
    work, delay = Ranking(me, 0.5).choose(theirs, peers)
    assert work in theirs and delay == 0.25  # rank 1 of 2
    work, delay = Ranking(other, 0.5).choose(theirs, peers)
    assert delay == 0


def test_an_agent_that_knows_no_one_defers_by_its_own_score() -> None:
    me = AGENTS[0]
    work, delay = Ranking(me, 0.5).choose(WORK[:3], frozenset())
    assert delay == min(spread_score(me, w.uid) for w in WORK[:3]) * 0.5
    assert delay == spread_score(me, work.uid) * 0.5


def test_an_agent_that_sees_only_its_own_claims_waits_for_no_one() -> None:
    me = AGENTS[0]
    peers = Peers()
    peers.saw(me, "lease-1", open_claim=True, now=0.0)  # still reporting its last claim
    known = peers.available(BUSY_SECONDS + 0.5, me)
    assert known == {me}
    assert peers.available(BUSY_SECONDS + 0.5) == frozenset()  # busy, to everyone else
    for size in (1, 3, 128):
        work, delay = Ranking(me, 0.5).choose(WORK[:size], known)
        assert delay == 0
        assert work == min(WORK[:size], key=lambda w: spread_score(me, w.uid))


def test_peers_are_forgotten_and_busy_ones_left_out() -> None:
    peers = Peers()
    peers.saw("a", "lease-1", open_claim=True, now=0.0)
    peers.saw("b", "lease-2", open_claim=True, now=0.0)
    assert peers.available(0.5) == {"a", "b"}
    peers.saw("a", "lease-1", open_claim=False, now=0.6)  # a reported
    assert peers.available(BUSY_SECONDS + 0.1) == {"a"}  # b still runs its command
    peers.ended("lease-2")
    assert peers.available(BUSY_SECONDS + 0.2) == {"a", "b"}
    assert peers.available(0.6 + PEER_SECONDS + 1) == frozenset()


def _brute_force(me: str, work: list[Work], peers: frozenset[str]) -> tuple[Work, int]:
    """The definition: the least (rank, own score, index), ranking every candidate."""
    everyone = peers | {me}

    def key(item: tuple[int, Work]) -> tuple[int, float, int]:
        index, candidate = item
        mine = spread_score(me, candidate.uid)
        rank = sum(1 for peer in everyone if spread_score(peer, candidate.uid) < mine)
        return rank, mine, index

    index, chosen = min(enumerate(work), key=key)
    return chosen, key((index, chosen))[0]


def test_the_choice_is_the_least_rank_then_own_score_of_all_the_work() -> None:
    ranking = Ranking(AGENTS[0], 0.5)
    for size in (1, 2, 5, 128):
        for peers in (frozenset(), frozenset(AGENTS[1:3]), frozenset(AGENTS)):
            for offset in (0, 7, 300):  # remembered scores, then new work beside them
                work = [Work(f"uid-{i}") for i in range(offset, offset + size)]
                expected, rank = _brute_force(AGENTS[0], work, peers)
                chosen, delay = ranking.choose(work, peers)
                assert chosen == expected
                everyone = len(peers | {AGENTS[0]})
                if everyone > 1:
                    assert delay == rank / everyone * 0.5


def test_work_owned_by_others_only_is_ranked_in_full() -> None:
    me = AGENTS[0]
    peers = frozenset(AGENTS)
    theirs = [w for w in WORK if min(AGENTS, key=lambda a: spread_score(a, w.uid)) != me]
    chosen, delay = Ranking(me, 0.5).choose(theirs, peers)
    expected, rank = _brute_force(me, theirs, peers)
    assert chosen == expected and rank > 0 and delay == rank / len(peers) * 0.5
