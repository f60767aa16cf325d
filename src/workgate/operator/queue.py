"""A keyed work queue: each key is reconciled by one worker at a time, bursts coalesce.

Like client-go's workqueue: a key added while it is being processed is processed once more
afterwards; a key added many times while waiting is processed once; delayed adds keep only
the earliest time. Delays are in memory only: after a restart the initial listing enqueues
every object again and the decision recomputes its wake-up time from status.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from datetime import datetime
from typing import Generic, TypeVar

from workgate.api.common import now_utc

K = TypeVar("K", bound=Hashable)
log = logging.getLogger(__name__)

ERROR_RETRY_SECONDS = (0.5, 1, 2, 5, 10, 30)


class WorkQueue(Generic[K]):
    def __init__(self, handler: Callable[[K], Awaitable[None]], *, workers: int = 4) -> None:
        self._handler = handler
        self._workers = workers
        self._ready: asyncio.Queue[K] = asyncio.Queue()
        self._queued: set[K] = set()
        self._active: set[K] = set()
        self._dirty: set[K] = set()
        self._timers: dict[K, tuple[float, asyncio.TimerHandle]] = {}
        self._failures: dict[K, int] = {}

    def add(self, key: K) -> None:
        if key in self._active:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._ready.put_nowait(key)

    def add_at(self, key: K, when: datetime) -> None:
        self.add_after(key, (when - now_utc()).total_seconds())

    def add_after(self, key: K, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + delay
        existing = self._timers.get(key)
        if existing is not None:
            if existing[0] <= deadline:
                return
            existing[1].cancel()
        self._timers[key] = (deadline, loop.call_at(deadline, self._fire, key))

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def __len__(self) -> int:
        return len(self._queued)

    async def run(self) -> None:
        workers = [asyncio.create_task(self._work()) for _ in range(self._workers)]
        try:
            await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()
            for _, handle in self._timers.values():
                handle.cancel()

    async def _work(self) -> None:
        while True:
            key = await self._ready.get()
            self._queued.discard(key)
            self._active.add(key)
            try:
                await self._handler(key)
                self._failures.pop(key, None)
            except asyncio.CancelledError:
                raise
            except Exception:
                count = self._failures.get(key, 0)
                self._failures[key] = count + 1
                delay = ERROR_RETRY_SECONDS[min(count, len(ERROR_RETRY_SECONDS) - 1)]
                log.exception("reconciling %s failed; retrying in %ss", key, delay)
                self.add_after(key, delay)
            finally:
                self._active.discard(key)
                if key in self._dirty:
                    self._dirty.discard(key)
                    self.add(key)
