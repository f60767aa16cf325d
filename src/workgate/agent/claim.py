"""A claim on one attempt of a WorkOrder: renewed under fencing, lost or reported.

Fencing, as client-go's leader election does it: a claim that has not been renewed
within its renew deadline (two thirds of `claimTimeoutSeconds`), or that is found taken
over, is *lost*: `Claim.lost` is set, the work must stop, and nothing is reported. The
deadline plus the grace end before the Lease can go stale, so no other claimant can start
the attempt while this one still runs. Transient API errors are retried (`retrying`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from workgate.api.wire import now_utc
from workgate.core.claims import Fencing, LeaseView, Outcome
from workgate.core.naming import waitpoint_name
from workgate.k8s import claims
from workgate.k8s.api import LEASES, WAITPOINTS, ApiError, Body, KubeApi, is_transient

log = logging.getLogger(__name__)
T = TypeVar("T")


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
    revoked: str | None = field(default=None, init=False)  # the operator's reason, if it did
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

    def revoke(self, reason: str) -> None:
        """The operator ended this attempt (cancelled, past its deadline): stop, report
        nothing, then `release()`."""
        if self.revoked is None:
            self.revoked = reason
            self._lose(f"revoked by the operator ({reason})")

    def lose(self, why: str) -> None:
        """Stop: the claim is gone (its Lease deleted), nothing is reported."""
        self._lose(why)

    async def release(self) -> None:
        """Hand the Lease back once the work has stopped (the answer to a revocation)."""

        async def once() -> None:
            if not await claims.release_own_lease(
                self.api, self.namespace, self.lease, self.identity
            ):
                log.info("could not release %s: it kept changing; it goes stale", self.lease.name)

        try:
            await retrying(once, until=time.monotonic() + 30, what="releasing the claim")
        except ApiError as exc:
            if not (exc.not_found or exc.conflict):
                raise
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.info("could not release %s: %s; it goes stale", self.lease.name, exc)

    async def _learn_revocation(self) -> None:
        """After a refusal: was it a revocation? Then the Lease is ours to release."""
        with contextlib.suppress(Exception):
            current = await self._reread()
            revoked = LeaseView.from_body(current).revoked if current else None
            if revoked is not None:
                self.revoke(revoked)

    def _still_ours(self, body: Body) -> bool:
        return LeaseView.from_body(body).is_claim_of(self.lease, self.identity)

    async def _write_held(
        self,
        write: Callable[[LeaseView], Awaitable[Body]],
        landed: Callable[[LeaseView], bool] = lambda _: False,
    ) -> Body:
        """`write` the Lease as last seen. A write that landed in between (a renewal's lost
        answer, the operator's) makes it a conflict: read the Lease again and write that
        version, up to CONFLICT_TRIES times, while it is still this claim's, unrevoked and
        without an outcome (or `landed`: what we meant is already there). ClaimTaken if not."""
        for _ in range(claims.CONFLICT_TRIES):
            try:
                return await write(self.lease)
            except claims.ClaimTaken:
                current = await self._reread()
                if current is None:
                    raise
                view = LeaseView.from_body(current)
                if view.revoked is not None:
                    self.revoke(view.revoked)
                    raise
                if landed(view):
                    return current
                if view.outcome is not None:
                    raise
                self.lease = view
        raise claims.ClaimTaken(self.lease.name)

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

        def once() -> Awaitable[Body]:
            return self._write_held(
                lambda lease: claims.renew_lease(self.api, self.namespace, lease, now_utc())
            )

        try:
            body = await retrying(once, until=self.deadline, what="renewing the claim")
        except claims.ClaimTaken:
            raise self._lose("the Lease was taken over or deleted") from None
        except ApiError as exc:
            if exc.status != 403:
                raise
            # Refused: the claim was revoked (admission lets only the operator touch it
            # then) or this identity may no longer hold it. Either way: stop.
            await self._learn_revocation()
            raise self._lose(f"renewal refused: {exc.message}") from None
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

    async def fail(
        self, error: str, reason: str = "AgentReportedFailure", exit_code: int | None = None
    ) -> None:
        await self._report(Outcome.FAILED, error=error, reason=reason, exit_code=exit_code)

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

        def once() -> Awaitable[Body]:
            return self._write_held(
                lambda lease: claims.report_outcome(
                    self.api, self.namespace, lease, outcome, **details
                ),
                landed=lambda lease: lease.outcome == outcome,  # an earlier try's answer lost
            )

        try:
            body = await retrying(once, until=self.deadline, what="reporting the outcome")
        except claims.ClaimTaken:
            raise self._lose("the Lease was taken over before the report") from None
        except ApiError as exc:
            if exc.status != 403:
                raise
            await self._learn_revocation()
            raise self._lose(f"report refused: {exc.message}") from None
        except Exception as exc:
            if is_transient(exc):
                raise self._lose("the report did not land before the renew deadline") from None
            raise
        self.lease = LeaseView.from_body(body)
