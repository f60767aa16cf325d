"""A keyed work queue: each key is reconciled by one worker at a time, bursts coalesce.

Like client-go's workqueue: a key added while it is being processed is processed once more
afterwards; a key added many times while waiting is processed once; delayed adds keep only
the earliest time. Delays are in memory only: after a restart the initial listing enqueues
every object again and the decision recomputes its wake-up time from status.

Three lanes. `add(key, low=True)` is for work that is most likely a no-op (a finished
WorkOrder that is up to date, as a restart lists thousands of them). Workers take the
normal lane first, but one low key after every `LOW_EVERY` normal ones, so the low lane
is never starved; a key waiting in the low lane moves to the normal one when it is added
normally (never the other way round). `add(key, urgent=True)` is for an outcome waiting
to be recorded (an agent's report, operator/lanes.py): it goes before the normal lane,
up to `URGENT_EVERY` in a row, so an outcome is not recorded only after a burst of new
work has been looked at (which agents claim without the operator in any case, and which,
looked at after its outcome, costs one status write instead of two).

`low_held`: the low lane waits until `open_low()` (the operator's, until its watches
have listed everything: a finished WorkOrder looked at before its Lease is listed would
be looked at again when it is). `low_rate`: at most so many low keys a second, so that
thousands of them do not take the event loop from the normal work whenever it waits on
others (a BuildRun's outcome).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from datetime import datetime
from typing import Generic, TypeVar

from workgate.api.common import now_utc
from workgate.k8s.api import ApiError

K = TypeVar("K", bound=Hashable)

log = logging.getLogger(__name__)

ERROR_RETRY_SECONDS = (0.5, 1, 2, 5, 10, 30)
LOW_EVERY = 8  # normal keys taken before one low one, when both lanes wait
URGENT_EVERY = 4  # urgent keys taken in a row before one normal one, when both wait
URGENT, NORMAL, LOW = 0, 1, 2  # lanes, the most pressing first


class WorkQueue(Generic[K]):
    def __init__(
        self,
        handler: Callable[[K], Awaitable[None]],
        *,
        workers: int = 4,
        low_held: bool = False,
        low_rate: float | None = None,
    ) -> None:
        self._handler = handler
        self._workers = workers
        self._urgent: OrderedDict[K, None] = OrderedDict()
        self._normal: OrderedDict[K, None] = OrderedDict()
        self._low: OrderedDict[K, None] = OrderedDict()
        self._lanes = (self._urgent, self._normal, self._low)
        self._low_open = not low_held
        self._low_interval = 1 / low_rate if low_rate else 0.0
        self._low_next = 0.0  # loop time from which the next low key may be taken
        self._nudge = asyncio.Event()  # a normal key came: a worker waiting for low looks
        self._waiting = asyncio.Semaphore(0)  # one release per key a worker may take
        self._streak = 0  # normal keys taken since the last low one
        self._urgent_streak = 0  # urgent keys taken since the last other one
        self._active: set[K] = set()
        self._dirty: dict[K, int] = {}  # added while active: key -> its most pressing lane
        self._timers: dict[K, tuple[float, asyncio.TimerHandle]] = {}
        self._failures: dict[K, int] = {}

    def add(self, key: K, *, low: bool = False, urgent: bool = False) -> None:
        self._add(key, URGENT if urgent else LOW if low else NORMAL)

    def _add(self, key: K, lane: int) -> None:
        if key in self._active:
            self._dirty[key] = min(lane, self._dirty.get(key, LOW))
            return
        waiting = next((i for i, keys in enumerate(self._lanes) if key in keys), None)
        if waiting is not None and waiting <= lane:
            return  # waiting already, as pressingly
        if waiting is not None:  # promoted (never the other way round)
            del self._lanes[waiting][key]
            if waiting == LOW and not self._low_open:
                self._waiting.release()  # the held low lane had no permit for it
        elif self._low_open or lane != LOW:
            self._waiting.release()
        self._lanes[lane][key] = None
        if lane != LOW:
            self._nudge.set()

    def open_low(self) -> None:
        if not self._low_open:
            self._low_open = True
            for _ in self._low:
                self._waiting.release()

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
        return len(self._urgent) + len(self._normal) + len(self._low)

    @property
    def low_waiting(self) -> int:
        return len(self._low)

    async def _take(self) -> K:
        """The next key: a worker holds a permit, so one is queued (now or after a wait
        for the low lane's rate, when a low key is due)."""
        loop = asyncio.get_running_loop()
        while True:
            if self._urgent and (self._urgent_streak < URGENT_EVERY or not self._normal):
                self._urgent_streak += 1
                return self._urgent.popitem(last=False)[0]
            self._urgent_streak = 0
            low_due = (
                self._low_open and self._low and (not self._normal or self._streak >= LOW_EVERY)
            )
            if not low_due:
                self._streak += 1
                return self._normal.popitem(last=False)[0]
            wait = self._low_next - loop.time()
            if wait > 0 and self._normal:  # the low lane's turn, not its time: normal goes
                return self._normal.popitem(last=False)[0]
            if wait <= 0:
                self._streak = 0
                self._low_next = loop.time() + self._low_interval
                return self._low.popitem(last=False)[0]
            self._nudge.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._nudge.wait(), wait)

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
            await self._waiting.acquire()
            key = await self._take()
            self._active.add(key)
            try:
                await self._handler(key)
                self._failures.pop(key, None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                count = self._failures.get(key, 0)
                self._failures[key] = count + 1
                delay = ERROR_RETRY_SECONDS[min(count, len(ERROR_RETRY_SECONDS) - 1)]
                if isinstance(exc, ApiError) and exc.expected:
                    log.warning("reconciling %s: %s; retrying in %ss", key, exc, delay)
                else:
                    log.exception("reconciling %s failed; retrying in %ss", key, delay)
                self.add_after(key, delay)
            finally:
                self._active.discard(key)
                if key in self._dirty:
                    self._add(key, self._dirty.pop(key))
