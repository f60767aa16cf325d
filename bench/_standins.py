"""The benches' stand-ins for Shipwright and the kubelet: each finishes the children a
controller makes (one status write each, the bench's own), as the real ones would."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from _common import watch_forever

from workgate.k8s.api import BUILDRUNS, ApiError, KubeApi, ResourceRef

PODS = ResourceRef("", "v1", "pods")
SUCCEEDED_CONDITION = {
    "type": "Succeeded",
    "status": "True",
    "reason": "Succeeded",
    "message": "stand-in",
    "lastTransitionTime": "2026-01-01T00:00:00Z",
}


# How many children a stand-in finishes at once. A real Shipwright has workers, and Pods
# have a kubelet per node: one at a time, the stand-in's own round trips would bound
# what a bench measures. Both benches' stand-ins (Shipwright, kubelet) use the same.
STAND_IN_CONCURRENCY = 16


class Background:
    """The stand-ins' writes, `limit` at once, off the watch that asked for them (so its
    events keep coming while they run)."""

    def __init__(self, limit: int = STAND_IN_CONCURRENCY) -> None:
        self._slots = asyncio.Semaphore(limit)
        self._tasks: set[asyncio.Task[None]] = set()

    def run(self, work: Callable[[], Awaitable[None]]) -> None:
        async def limited() -> None:
            async with self._slots:
                await work()

        task = asyncio.create_task(limited())
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            print(f"  (a stand-in write failed: {task.exception()!r})", file=sys.stderr)

    def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()


async def stand_in_shipwright(
    namespace: str, marked: set[str], listed: asyncio.Event | None = None
) -> None:
    """Mark each new BuildRun Succeeded (one status write each: the bench's own)."""
    writes = Background()

    async def on_event(api: KubeApi, kind: str, run: Any) -> None:
        name = run["metadata"]["name"]
        if kind == "ADDED" and name not in marked and not (run.get("status") or {}):
            marked.add(name)
            writes.run(
                lambda: api.merge_patch(
                    BUILDRUNS.path(namespace, name, "status"),
                    {"status": {"conditions": [SUCCEEDED_CONDITION]}},
                )
            )

    try:
        await watch_forever(BUILDRUNS.path(namespace), {}, on_event, listed)
    finally:
        writes.cancel()


async def stand_in_kubelet(namespace: str, marked: set[str]) -> None:
    """Mark each new Pod Succeeded (one status write each: the bench's own)."""
    writes = Background()
    status = {"phase": "Succeeded", "conditions": [{"type": "Ready", "status": "False"}]}

    async def mark(api: KubeApi, name: str) -> None:
        try:
            await api.merge_patch(PODS.path(namespace, name, "status"), {"status": status})
        except ApiError as exc:
            if not exc.not_found:
                raise

    async def on_event(api: KubeApi, kind: str, pod: Any) -> None:
        name = pod["metadata"]["name"]
        if kind == "ADDED" and name not in marked:
            marked.add(name)
            writes.run(lambda: mark(api, name))

    try:
        await watch_forever(PODS.path(namespace), {}, on_event)
    finally:
        writes.cancel()
