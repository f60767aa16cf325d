"""The agent API: claim WorkOrders of a work type, keep the claim alive, report the outcome.

An agent never writes a WorkOrder. It claims by creating the WorkOrder's Lease (atomic:
exactly one creator wins), renews the Lease while it works, and reports the outcome on
that Lease. The operator turns all of that into status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from workgate.api.common import now_utc
from workgate.api.workorder import Phase
from workgate.core import signals as signal_rules
from workgate.core.claims import LeaseView, Outcome
from workgate.core.naming import lease_name, waitpoint_name
from workgate.k8s import claims, waitpoints
from workgate.k8s.api import WAITPOINTS, WORKORDERS, ApiError, Body, KubeApi

log = logging.getLogger(__name__)


def default_identity() -> str:
    return f"agent/{socket.gethostname()}/{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Suspension:
    namespace: str
    waitpoint: str
    token: str = field(repr=False)  # never printed: repr leaves it out


async def whoami(api: KubeApi) -> str:
    review = await api.create(
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    return str(review["status"]["userInfo"]["username"])


class ClaimLost(Exception):
    """The claim expired or was taken over; stop working and do not report."""


@dataclass
class Claim:
    api: KubeApi
    workorder: Body
    lease: LeaseView
    identity: str
    _lost: bool = field(default=False, init=False)

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

    async def renew(self) -> None:
        try:
            body = await claims.renew_lease(self.api, self.namespace, self.lease, now_utc())
        except claims.ClaimTaken:
            self._lost = True
            raise ClaimLost(f"{self.namespace}/{self.name} attempt {self.attempt}") from None
        self.lease = LeaseView.from_body(body)

    @contextlib.asynccontextmanager
    async def kept_alive(self) -> AsyncIterator[Claim]:
        """Renew the Lease in the background (every third of its duration) while inside."""

        async def renew_forever() -> None:
            while True:
                await asyncio.sleep(max(self.lease.duration_seconds / 3, 0.2))
                await self.renew()

        task = asyncio.create_task(renew_forever())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ClaimLost):
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
            wp = await self.api.get(WAITPOINTS.path(self.namespace, name))
            sealed = (wp.get("status") or {}).get("sealedToken")
            if sealed:
                token = signal_rules.open_sealed_token(sealed, private_key, wp["metadata"]["uid"])
                return Suspension(self.namespace, name, token)
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"no token for waitpoint {name} within {token_wait_seconds}s")
            await asyncio.sleep(0.1)

    async def _report(self, outcome: Outcome, **details: Any) -> None:
        if self._lost:
            raise ClaimLost(f"{self.namespace}/{self.name} attempt {self.attempt}")
        try:
            body = await claims.report_outcome(
                self.api, self.namespace, self.lease, outcome, **details
            )
        except claims.ClaimTaken:
            self._lost = True
            raise ClaimLost(f"{self.namespace}/{self.name} attempt {self.attempt}") from None
        self.lease = LeaseView.from_body(body)


def _attempt_open(workorder: Body, uid: str, attempt: int, identity: str) -> bool:
    """Is `attempt` of this very WorkOrder still open to (or already recorded for) us?

    The operator may have seen our Lease and recorded the claim before we look.
    """
    status = workorder.get("status") or {}
    phase = status.get("phase")
    return (
        workorder["metadata"]["uid"] == uid
        and int(status.get("retryCount") or 0) + 1 == attempt
        and (
            phase == Phase.PENDING
            or (phase == Phase.CLAIMED and status.get("claimedBy") == identity)
        )
    )


class Agent:
    def __init__(
        self,
        api: KubeApi,
        work_type: str,
        *,
        namespace: str | None = None,
        identity: str | None = None,
    ) -> None:
        self.api = api
        self.work_type = work_type
        self.namespace = namespace
        self.identity = identity or default_identity()

    async def claimable(self) -> list[Body]:
        """PENDING WorkOrders of our work type, oldest first."""
        listing = await self.api.get(WORKORDERS.path(self.namespace))
        items = [
            wo
            for wo in listing.get("items", [])
            if wo.get("spec", {}).get("workType") == self.work_type
            and (wo.get("status") or {}).get("phase") == Phase.PENDING
            and not wo["metadata"].get("deletionTimestamp")
        ]
        items.sort(key=lambda wo: wo["metadata"].get("creationTimestamp", ""))
        return items

    async def claim(self, workorder: Body) -> Claim | None:
        """Claim the WorkOrder's next attempt; None if someone else holds it or it moved on."""
        meta = workorder["metadata"]
        status = workorder.get("status") or {}
        attempt = int(status.get("retryCount") or 0) + 1
        lease = claims.build_lease(
            workorder,
            lease_name(meta["name"]),
            attempt=attempt,
            holder=self.identity,
            duration_seconds=int(workorder["spec"].get("claimTimeoutSeconds") or 3600),
            now=now_utc(),
        )
        try:
            created = LeaseView.from_body(await claims.create_lease(self.api, lease))
        except claims.ClaimTaken:
            return None
        # The list we chose from may be stale: confirm that this attempt is still open now
        # that we hold the Lease (the operator ends an attempt in status before it deletes
        # the attempt's Lease, so this read sees any attempt that is over).
        try:
            current = await self.api.get(WORKORDERS.path(meta["namespace"], meta["name"]))
        except ApiError as exc:
            if not exc.not_found:
                raise
            current = None
        if current is None or not _attempt_open(current, meta["uid"], attempt, self.identity):
            await claims.release_lease(self.api, meta["namespace"], created)
            return None
        log.info("claimed %s/%s attempt %d", meta["namespace"], meta["name"], attempt)
        return Claim(self.api, current, created, self.identity)

    async def claim_next(self) -> Claim | None:
        candidates = await self.claimable()
        # Agents racing for one queue spread out instead of all colliding on its head.
        random.shuffle(candidates)
        for workorder in candidates:
            claim = await self.claim(workorder)
            if claim is not None:
                return claim
        return None

    async def wait_for_claim(self, poll_seconds: float = 1.0) -> Claim:
        while True:
            claim = await self.claim_next()
            if claim is not None:
                return claim
            await asyncio.sleep(poll_seconds * (0.5 + random.random()))
