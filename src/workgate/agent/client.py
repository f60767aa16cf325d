"""The agent API: claim WorkOrders of a work type, keep the claim alive, report the outcome.

An agent never writes a WorkOrder. It claims by creating the WorkOrder's Lease (atomic:
exactly one creator wins) as itself: `holderIdentity` is the user name the API server
authenticated (the operator's admission webhook refuses any other). It renews the Lease
while it works and reports the outcome on that Lease; the operator turns all of that
into status.

Fencing, as client-go's leader election does it: a claim that has not been renewed
within its renew deadline (two thirds of `claimTimeoutSeconds`), or that is found taken
over, is *lost*: `Claim.lost` is set, the work must stop (the `workgate agent` command
terminates its command, then kills it after a grace period), and nothing is reported.
The deadline plus the grace end before the Lease can go stale, so no other claimant can
start the attempt while this one still runs. Transient API errors are retried.

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
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from workgate.agent.feed import Candidate, WorkFeed, claimable_selector, spread_score
from workgate.api.wire import Phase, current_attempt_of, now_utc, open_to_claim
from workgate.core.claims import Fencing, LeaseView, Outcome
from workgate.core.naming import lease_name, waitpoint_name
from workgate.k8s import claims
from workgate.k8s.api import LEASES, WAITPOINTS, WORKORDERS, ApiError, Body, KubeApi, is_transient

log = logging.getLogger(__name__)
T = TypeVar("T")


def default_instance() -> str:
    return f"{socket.gethostname()}/{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Suspension:
    namespace: str
    waitpoint: str
    token: str = field(repr=False)  # never printed: repr leaves it out


async def whoami(api: KubeApi) -> str:
    """The user name the API server authenticates this client as."""
    review = await api.create(
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    return str(review["status"]["userInfo"]["username"])


async def retrying(
    call: Callable[[], Awaitable[T]], *, until: float | None = None, what: str = "request"
) -> T:
    """`call()` again after transient API errors, with jittered exponential backoff, until
    the monotonic deadline `until` (then the last error is raised)."""
    backoff = 0.1
    while True:
        try:
            if until is None:
                return await call()
            remaining = until - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{what}: deadline passed")
            return await asyncio.wait_for(call(), timeout=remaining)
        except Exception as exc:
            if not is_transient(exc):
                raise
            if until is not None and time.monotonic() + backoff >= until:
                raise
            log.info("%s failed (%s); retrying in %.1fs", what, exc or type(exc).__name__, backoff)
        await asyncio.sleep(backoff * (0.5 + random.random()))
        backoff = min(backoff * 2, 5.0)


class ClaimLost(Exception):
    """The claim expired or was taken over; stop working and do not report."""


@dataclass
class Claim:
    api: KubeApi
    workorder: Body
    lease: LeaseView
    identity: str
    instance: str = ""
    lost: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _renewed_at: float = field(default_factory=time.monotonic, init=False)

    @property
    def namespace(self) -> str:
        return str(self.workorder["metadata"]["namespace"])

    @property
    def name(self) -> str:
        return str(self.workorder["metadata"]["name"])

    @property
    def attempt(self) -> int:
        return self.lease.attempt or 0

    @property
    def yaml_content(self) -> str:
        return str(self.workorder["spec"].get("yamlContent", ""))

    @property
    def fencing(self) -> Fencing:
        return Fencing.for_duration(self.lease.duration_seconds)

    @property
    def deadline(self) -> float:
        """Monotonic time by which the claim must have been renewed again, or be fenced."""
        return self._renewed_at + self.fencing.renew_deadline

    def _lose(self, why: str) -> ClaimLost:
        if not self.lost.is_set():
            log.warning(
                "claim on %s/%s attempt %d lost: %s", self.namespace, self.name, self.attempt, why
            )
        self.lost.set()
        return ClaimLost(f"{self.namespace}/{self.name} attempt {self.attempt}: {why}")

    def _still_ours(self, body: Body) -> bool:
        view = LeaseView.from_body(body)
        return (
            view.uid == self.lease.uid
            and view.holder == self.identity
            and view.attempt == self.lease.attempt
        )

    async def _reread(self) -> Body | None:
        """After a conflict: the Lease as it is now, if it is still this claim's."""
        try:
            body = await self.api.get(LEASES.path(self.namespace, self.lease.name))
        except ApiError as exc:
            if exc.not_found:
                return None
            raise
        return body if self._still_ours(body) else None

    async def renew(self) -> None:
        """Renew once (transient errors retried until the deadline); ClaimLost if lost."""
        if self.lost.is_set():
            raise ClaimLost(f"{self.namespace}/{self.name} attempt {self.attempt}")
        sent = time.monotonic()

        async def once() -> Body:
            try:
                return await claims.renew_lease(self.api, self.namespace, self.lease, now_utc())
            except claims.ClaimTaken:
                # A renewal whose answer was lost still moved the resourceVersion: look.
                current = await self._reread()
                if current is None or LeaseView.from_body(current).outcome is not None:
                    raise
                self.lease = LeaseView.from_body(current)
                return await claims.renew_lease(self.api, self.namespace, self.lease, now_utc())

        try:
            body = await retrying(once, until=self.deadline, what="renewing the claim")
        except claims.ClaimTaken:
            raise self._lose("the Lease was taken over or deleted") from None
        except Exception as exc:
            if is_transient(exc):
                raise self._lose("not renewed before the renew deadline") from None
            raise
        self.lease = LeaseView.from_body(body)
        self._renewed_at = sent

    async def keep_alive(self) -> None:
        """Renew every third of the duration until cancelled; returns once lost."""
        while not self.lost.is_set():
            wait = self._renewed_at + self.fencing.renew_every - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                await self.renew()
            except ClaimLost:
                return

    @contextlib.asynccontextmanager
    async def kept_alive(self) -> AsyncIterator[Claim]:
        """Renew the Lease in the background while inside; check `lost` to fence."""
        task = asyncio.create_task(self.keep_alive())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def succeed(self) -> None:
        await self._report(Outcome.SUCCEEDED)

    async def fail(self, error: str, reason: str = "AgentReportedFailure") -> None:
        await self._report(Outcome.FAILED, error=error, reason=reason)

    async def suspend(
        self,
        key: str,
        required_signal_names: list[str] | None = None,
        *,
        timeout_seconds: int | None = None,
        on_timeout: str = "Fail",
        token_wait_seconds: float = 30.0,
    ) -> Suspension:
        """Park this attempt at a new waitpoint until its signals arrive.

        Creates the Waitpoint with a fresh public key of ours, hands the claim back (the
        operator marks the WorkOrder WAITING, and PENDING again once the waitpoint closes,
        for a claimant to resume), and returns the token, which the operator mints into
        the waitpoint's Secret and seals to our key: no one else can open that copy.
        """
        from workgate.core import signals as signal_rules
        from workgate.k8s import waitpoints

        private_key, public_key = signal_rules.recipient_keypair()
        name = waitpoint_name(self.name, key)
        body = waitpoints.build_dynamic_waitpoint(
            self.workorder,
            name,
            key=key,
            required_signal_names=list(required_signal_names or []),
            timeout_seconds=timeout_seconds,
            on_timeout=on_timeout,
            recipient_key=public_key,
        )
        await self.api.create(WAITPOINTS.path(self.namespace), body)
        await self._report(Outcome.SUSPENDED, waitpoint_key=key)
        deadline = asyncio.get_running_loop().time() + token_wait_seconds
        while True:
            wp = await retrying(
                lambda: self.api.get(WAITPOINTS.path(self.namespace, name)), what="token"
            )
            sealed = (wp.get("status") or {}).get("sealedToken")
            if sealed:
                token = signal_rules.open_sealed_token(sealed, private_key, wp["metadata"]["uid"])
                return Suspension(self.namespace, name, token)
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"no token for waitpoint {name} within {token_wait_seconds}s")
            await asyncio.sleep(0.1)

    async def _report(self, outcome: Outcome, **details: Any) -> None:
        """Record the outcome on the held Lease; idempotent (a retry after a lost answer
        finds its own report in place), and never after the claim is lost."""
        if self.lost.is_set():
            raise ClaimLost(f"{self.namespace}/{self.name} attempt {self.attempt}")

        async def once() -> Body:
            try:
                return await claims.report_outcome(
                    self.api, self.namespace, self.lease, outcome, **details
                )
            except claims.ClaimTaken:
                current = await self._reread()
                if current is None:
                    raise
                reported = LeaseView.from_body(current).outcome
                if reported == outcome:
                    return current  # our earlier try landed
                if reported is not None:
                    raise
                self.lease = LeaseView.from_body(current)  # a renewal moved it: try again
                return await claims.report_outcome(
                    self.api, self.namespace, self.lease, outcome, **details
                )

        try:
            body = await retrying(once, until=self.deadline, what="reporting the outcome")
        except claims.ClaimTaken:
            raise self._lose("the Lease was taken over before the report") from None
        except Exception as exc:
            if is_transient(exc):
                raise self._lose("the report did not land before the renew deadline") from None
            raise
        self.lease = LeaseView.from_body(body)


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
            return None
        except ApiError as exc:
            if exc.status in (400, 403, 422):
                log.warning("claim of %s/%s refused: %s", meta["namespace"], meta["name"], exc)
                return None
            raise
        # The view we chose from may be stale: confirm that this attempt is still open now
        # that we hold the Lease (the operator ends an attempt in status before it deletes
        # the attempt's Lease, so this read sees any attempt that is over).
        try:
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
                await claims.release_lease(self.api, meta["namespace"], created)
            return None
        log.info("claimed %s/%s attempt %d", meta["namespace"], meta["name"], attempt)
        claim = Claim(self.api, current, created, identity, self.instance)
        claim._renewed_at = sent
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
            await self._feed.start()
        return self._feed

    async def wait_for_claim(self) -> Claim:
        """Watch for claimable work and claim one WorkOrder (transient errors retried).

        Of the work it sees, an agent tries its own best-ranked first (a per-agent hash
        order), oldest breaking ties, after a delay that grows with its rank: another agent
        that ranks the WorkOrder higher has usually claimed it by then, and its Lease
        (seen through the watch) takes it out of this agent's view without a collision.
        """
        identity = await self.identity()
        feed = await self._feed_started()
        while True:
            work = await feed.wait_for_work()
            scored = sorted(
                ((spread_score(identity + self.instance, c.uid), c.created, c) for c in work),
                key=lambda item: (item[0], item[1]),
            )
            score, _, candidate = scored[0]
            if score * self.spread_seconds > 0:
                await asyncio.sleep(score * self.spread_seconds)
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
