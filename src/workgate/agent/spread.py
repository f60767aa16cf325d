"""Which claimable WorkOrder an agent tries first, and after how long: agents spread over
the work instead of racing for it. Pure: no I/O, the clock passed in.

Rendezvous hashing over the claimants an agent knows: each agent ranks every WorkOrder
with a stable per-(agent, WorkOrder) score, and the WorkOrder is *owned* by the
available peer that scores it lowest. An agent tries its own work first and at once; work
owned by others only after a delay that grows with its rank there, by when the owner has
usually claimed it and its Lease has taken it out of this agent's view. So two agents
that know each other aim at different WorkOrders, and nothing waits for an owner that
is gone or busy: peers are learnt from the claim Leases of the work type (holder and
instance), forgotten when not seen for `PEER_SECONDS`, and left out while they hold an
unreported claim older than `BUSY_SECONDS` (they run a command and will not claim now).
An agent that has seen no claim lately, not even its own (start-up, or after a quiet
spell), defers by its own score: agents starting together spread that way until their
first Leases show who is there. One that sees only its own claims is alone, and defers
to no one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol, TypeVar

PEER_SECONDS = 30.0
BUSY_SECONDS = 1.0


def spread_score(identity: str, uid: str) -> float:
    """A stable pseudo-random rank in [0, 1) of one WorkOrder for one agent."""
    digest = hashlib.blake2b(f"{identity}\0{uid}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def claimant_key(holder: str, instance: str) -> str:
    """One claimant process: its authenticated user and its instance name."""
    return f"{holder}/{instance}"


class Peers:
    """The claimants seen lately through their Leases, and which of them are working."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}  # claimant -> when its Lease was last seen
        self._open: dict[str, tuple[str, float]] = {}  # unreported claim -> (claimant, since)

    def saw(self, claimant: str, lease_uid: str, *, open_claim: bool, now: float) -> None:
        self._seen[claimant] = now
        if open_claim:
            self._open.setdefault(lease_uid, (claimant, now))
        else:
            self._open.pop(lease_uid, None)

    def ended(self, lease_uid: str) -> None:
        """The claim's Lease is gone."""
        self._open.pop(lease_uid, None)

    def available(self, now: float, me: str = "") -> frozenset[str]:
        """The claimants seen lately that are not busy; `me` (the asking claimant, which
        is about to claim, so not busy) is among them if its own claims were seen."""
        for claimant in [c for c, t in self._seen.items() if now - t > PEER_SECONDS]:
            del self._seen[claimant]
        busy = {c for c, since in self._open.values() if now - since > BUSY_SECONDS}
        return frozenset(c for c in self._seen if c not in busy or c == me)


class HasUid(Protocol):
    @property
    def uid(self) -> str: ...


C = TypeVar("C", bound=HasUid)


class Ranking:
    """One agent's choice among claimable work (`me`: its claimant key).

    Scores are remembered for the current work only (so this stays bounded), and peers'
    scores are computed only for the candidates looked at: candidates are taken in the
    order of this agent's own score, and the first one it owns (rank 0) is the answer,
    which is usually one of the first few. Only when it owns none of the work are all
    ranked."""

    def __init__(self, me: str, spread_seconds: float) -> None:
        self.me = me
        self.spread_seconds = spread_seconds
        self._scores: dict[str, dict[str, float]] = {}  # uid -> claimant -> score

    def choose(self, work: Sequence[C], peers: frozenset[str]) -> tuple[C, float]:
        """The WorkOrder to try (of `work`, oldest first) and how long to wait before.

        Own work first (lowest own score first), then by rank among the peers: the
        candidate with the least (rank, own score, index in `work`). `peers` includes
        this agent when its own claims were seen lately: alone, it waits for no one."""
        everyone = peers | {self.me}
        me, previous = self.me, self._scores
        scores: dict[str, dict[str, float]] = {}
        for candidate in work:
            known = previous.get(candidate.uid)
            if known is None:
                known = {me: spread_score(me, candidate.uid)}
            scores[candidate.uid] = known
        self._scores = scores
        order = sorted(range(len(work)), key=lambda i: scores[work[i].uid][me])
        best: tuple[int, float, int] | None = None
        for index in order:
            uid = work[index].uid
            known = scores[uid]
            mine = known[me]
            rank = 0
            for peer in everyone:
                score = known.get(peer)
                if score is None:
                    score = known[peer] = spread_score(peer, uid)
                if score < mine:
                    rank += 1
            key = (rank, mine, index)
            if best is None or key < best:
                best = key
                if rank == 0:  # owned, and no later one has a lower own score
                    break
        assert best is not None
        rank, mine, index = best
        if not peers:  # knows no one yet, not even itself: start-up's spread
            return work[index], mine * self.spread_seconds
        return work[index], rank / len(everyone) * self.spread_seconds
