"""The agent API: claim WorkOrders of a work type, keep the claim alive, report the outcome.

An agent never writes a WorkOrder. It claims by creating the WorkOrder's Lease (atomic:
exactly one creator wins) as itself: `holderIdentity` is the user name the API server
authenticated (the operator's admission webhook refuses any other). It renews the Lease
while it works and reports the outcome on that Lease; the operator turns all of that
into status.

Fencing (agent/claim.py), as client-go's leader election does it: a claim not renewed
within its renew deadline, or found taken over, is *lost*: the work must stop (the
`workgate agent` command terminates its command, then kills it after a grace period),
and nothing is reported.

Only the standard library, the API client and the wire names are imported here, so an
agent process stays small; dynamic suspension loads its cryptography when used.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
import uuid
import weakref
from typing import TypeVar

from workgate.agent.claim import Claim, ClaimLost, Suspension, retrying, whoami
from workgate.agent.feed import Candidate, WorkFeed, claimable_selector
from workgate.agent.spread import Ranking, claimant_key
from workgate.agent.timings import Timings
from workgate.api.wire import Phase, current_attempt_of, now_utc, open_to_claim
from workgate.core.claims import MAX_INSTANCE, LeaseView
from workgate.core.naming import lease_name
from workgate.k8s import claims
from workgate.k8s.api import WORKORDERS, ApiError, Body, KubeApi

log = logging.getLogger(__name__)
T = TypeVar("T")


def default_instance() -> str:
    return f"{socket.gethostname()}/{uuid.uuid4().hex[:8]}"


def _attempt_open(workorder: Body, uid: str, attempt: int, identity: str) -> bool:
    """Is `attempt` of this very WorkOrder still open to (or already recorded for) us?

    The operator may have seen our Lease and recorded the claim before we look.
    """
    status = workorder.get("status") or {}
    return (
        workorder["metadata"]["uid"] == uid
        and current_attempt_of(status) == attempt
        and (
            open_to_claim(workorder.get("spec") or {}, status)
            or (status.get("phase") == Phase.CLAIMED and status.get("claimedBy") == identity)
        )
    )


# How long, at most, an agent defers to agents that rank a newly pending WorkOrder higher.
# The winner waits about this over (agents + 1); the runner-up as long again, enough for
# the winner's Lease to reach it through its watch on a busy API server (at 0.05 s, 10
# agents collided on about every WorkOrder; see bench/agent_bench.py).
DEFAULT_SPREAD_SECONDS = 0.5


class Agent:
    """Claims WorkOrders of one work type as the authenticated user of `api`.

    `instance` names this process among others of the same identity (in the Lease's
    `workgate.io/claimant-instance` annotation and the logs); `spread_seconds` bounds
    how long an agent defers to others that rank a newly pending WorkOrder higher.
    """

    def __init__(
        self,
        api: KubeApi,
        work_type: str,
        *,
        namespace: str | None = None,
        instance: str | None = None,
        spread_seconds: float = DEFAULT_SPREAD_SECONDS,
    ) -> None:
        self.api = api
        self.work_type = work_type
        self.namespace = namespace
        self.instance = instance or default_instance()
        self.spread_seconds = spread_seconds
        self._identity: str | None = None
        self._feed: WorkFeed | None = None
        self._ranking: Ranking | None = None  # kept across claims: its scores are reused
        self._claims: weakref.WeakValueDictionary[str, Claim] = weakref.WeakValueDictionary()
        self.timings = Timings()  # where the time goes, by phase (logged when it stops)

    def _revoked(self, lease_uid: str, reason: str) -> None:
        """The feed saw a claim revoked (`reason`) or deleted (no reason): if it is one of
        ours, it stops."""
        claim = self._claims.get(lease_uid)
        if claim is None:
            return
        if reason:
            claim.revoke(reason)
        else:  # deleted under us (by the operator, or by hand): someone else may claim next
            claim.lose("the Lease was deleted")

    async def identity(self) -> str:
        if self._identity is None:
            self._identity = await retrying(lambda: whoami(self.api), what="who am I")
        return self._identity

    async def claim(self, workorder: Body) -> Claim | None:
        """Claim the WorkOrder's next attempt; None if someone else holds it or it moved on."""
        identity = await self.identity()
        meta = workorder["metadata"]
        status = workorder.get("status") or {}
        attempt = current_attempt_of(status)
        lease = claims.build_lease(
            workorder,
            lease_name(meta["name"]),
            attempt=attempt,
            holder=identity,
            duration_seconds=int(workorder["spec"].get("claimTimeoutSeconds") or 3600),
            now=now_utc(),
            instance=self.instance,
        )
        sent = time.monotonic()
        try:
            created = LeaseView.from_body(
                await retrying(lambda: claims.create_lease(self.api, lease), what="claiming")
            )
        except claims.ClaimTaken:
            self.timings.add("Lease taken by another", time.monotonic() - sent)
            return None
        except ApiError as exc:
            if exc.status in (400, 403, 422):
                log.warning("claim of %s/%s refused: %s", meta["namespace"], meta["name"], exc)
                return None
            raise
        self.timings.add("create Lease", time.monotonic() - sent)
        # The view we chose from may be stale: confirm that this attempt is still open now
        # that we hold the Lease (the operator ends an attempt in status before it deletes
        # the attempt's Lease, so this read sees any attempt that is over).
        try:
            with self.timings.timed("confirm"):
                current: Body | None = await retrying(
                    lambda: self.api.get(WORKORDERS.path(meta["namespace"], meta["name"])),
                    what="confirming the claim",
                )
        except ApiError as exc:
            if not exc.not_found:
                raise
            current = None
        if current is None or not _attempt_open(current, meta["uid"], attempt, identity):
            with contextlib.suppress(ApiError):
                await claims.release_own_lease(self.api, meta["namespace"], created, identity)
            return None
        log.info("claimed %s/%s attempt %d", meta["namespace"], meta["name"], attempt)
        claim = Claim(self.api, current, created, identity, self.instance)
        claim._renewed_at = sent
        self._claims[created.uid] = claim
        return claim

    async def claim_next(self) -> Claim | None:
        """One look (a filtered list, no watch): claim any claimable WorkOrder of our type."""
        params = {"fieldSelector": claimable_selector(self.work_type)}
        listing = await self.api.get(WORKORDERS.path(self.namespace), params=params)
        candidates = [
            wo
            for wo in listing.get("items", [])
            if wo.get("spec") and open_to_claim(wo["spec"], wo.get("status") or {})
        ]
        random.shuffle(candidates)  # racing agents spread out instead of all taking the head
        for workorder in candidates:
            claim = await self.claim(workorder)
            if claim is not None:
                return claim
        return None

    async def _feed_started(self) -> WorkFeed:
        if self._feed is None:
            self._feed = WorkFeed(self.api, self.work_type, self.namespace)
            self._feed.on_revoked = self._revoked
            await self._feed.start()
        return self._feed

    async def wait_for_claim(self) -> Claim:
        """Watch for claimable work and claim one WorkOrder (transient errors retried).

        Of the work it sees, an agent tries first what it owns among the peers it knows
        (rendezvous hashing, agent/spread.py), at once; others' work after a delay that
        grows with its rank there: an owner that is there has claimed it by then, and its
        Lease (seen through the watch) takes it out of this agent's view without a
        collision.
        """
        identity = await self.identity()
        feed = await self._feed_started()
        if self._ranking is None:
            me = claimant_key(identity, self.instance[:MAX_INSTANCE])
            self._ranking = Ranking(me, self.spread_seconds)
        ranking, me = self._ranking, self._ranking.me
        while True:
            # (the first wait is start-up's: until work is created)
            phase = "waiting for work" if self.timings.count else "waiting for the first work"
            with self.timings.timed(phase):
                work = await feed.wait_for_work()
            candidate, delay = ranking.choose(work, feed.peers.available(time.monotonic(), me))
            if delay > 0:
                with self.timings.timed("deferring"):
                    await asyncio.sleep(delay)
            if not feed.still_claimable(candidate):
                continue
            try:
                claim = await self.claim(candidate.as_body())
            except ApiError as exc:
                log.warning("claiming %s/%s: %s", candidate.namespace, candidate.name, exc)
                claim = None
            if claim is not None:
                return claim
            feed.pass_over(candidate)  # lost the race or it moved on: the watch will tell

    async def close(self) -> None:
        if self._feed is not None:
            await self._feed.stop()
            self._feed = None


__all__ = [
    "Agent",
    "Candidate",
    "Claim",
    "ClaimLost",
    "Suspension",
    "retrying",
    "whoami",
]
