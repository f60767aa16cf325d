"""Leader election for queue admission (operator/leader.py) on the real API server: one
leader at a time, a stopped leader hands over at once, a vanished one only after its
Lease expires, and a leader that cannot renew stops deciding before anyone takes over."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from workgate.k8s.api import LEASES, KubeApi
from workgate.operator.leader import LeaderElector

from .conftest import wait_for


def elector(api: KubeApi, namespace: str, who: str, **timing: float) -> LeaderElector:
    timing = {"lease_duration": 6.0, "renew_deadline": 4.0, "retry_period": 0.2, **timing}
    return LeaderElector(api, namespace, "admission", who, **timing)


def leads(candidate: LeaderElector) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return candidate.leading()

    return probe


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_one_leader_and_a_clean_stop_hands_over_at_once(api: KubeApi, namespace: str) -> None:
    first, second = elector(api, namespace, "first"), elector(api, namespace, "second")
    first_run = asyncio.create_task(first.run())
    await wait_for(leads(first), what="first leads")
    second_run = asyncio.create_task(second.run())
    try:
        # Several of second's retries: it never leads while first renews.
        for _ in range(10):
            await asyncio.sleep(0.2)
            assert first.leading() and not second.leading()
        stopped = time.monotonic()
        await stop(first_run)
        assert not first.leading()
        lease = await api.get(LEASES.path(namespace, "admission"))
        assert lease["spec"].get("holderIdentity") in (None, "")
        await wait_for(leads(second), what="second leads")
        # Without the release second would wait out the 6 s duration.
        assert time.monotonic() - stopped < 3.0
        lease = await api.get(LEASES.path(namespace, "admission"))
        assert lease["spec"]["holderIdentity"] == "second"
    finally:
        await stop(second_run)


async def test_a_vanished_leader_is_replaced_only_after_it_stopped_deciding(
    api: KubeApi, namespace: str
) -> None:
    first, second = elector(api, namespace, "first"), elector(api, namespace, "second")
    assert await first.try_acquire_or_renew()
    renewed = time.monotonic()
    # first now goes silent (no release: a crashed or partitioned replica).
    second_run = asyncio.create_task(second.run())
    try:
        await wait_for(leads(second), timeout=15, what="takeover")
        took_over = time.monotonic()
        assert took_over - renewed >= first.lease_duration - 0.5  # not before expiry
        assert not first.leading()  # its renew deadline passed before the takeover
    finally:
        await stop(second_run)
