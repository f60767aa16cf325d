"""The queues of work types with a concurrency limit: who holds a slot, who waits, in order.

Fed from the WorkOrder watch (small entries, never bodies), asked by the reconciler for
one WorkOrder's `QueueView` before it decides. Admission is serialised per work type
(`admitting`), so two workers of this process never give the same free slot away twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from workgate.api.wire import Phase, recorded_phase
from workgate.core.controls import QueueEntry, QueueView, admit

Key = tuple[str, str]
ACTIVE = frozenset({Phase.PENDING.value, Phase.CLAIMED.value})
WAITING = frozenset({Phase.QUEUED.value, ""})
SHOWN_POSITIONS = 20  # queue positions kept current in status


class WorkTypeQueues:
    def __init__(self, limits: tuple[tuple[str, int], ...]) -> None:
        self.limits = dict(limits)
        self._entries: dict[str, dict[Key, QueueEntry]] = {t: {} for t in self.limits}
        self._locks = {t: asyncio.Lock() for t in self.limits}

    def limited(self, work_type: str) -> bool:
        return work_type in self.limits

    def observe(self, key: Key, body: dict[str, Any]) -> None:
        work_type = str((body.get("spec") or {}).get("workType", ""))
        entries = self._entries.get(work_type)
        if entries is None:
            return
        phase = recorded_phase(body.get("status")) or ""
        if phase not in ACTIVE | WAITING or body["metadata"].get("deletionTimestamp"):
            entries.pop(key, None)
            return
        entries[key] = QueueEntry(
            key=key,
            priority=int((body.get("spec") or {}).get("priority") or 0),
            created=str(body["metadata"].get("creationTimestamp", "")),
            active=phase in ACTIVE,
            waiting=phase in WAITING,
        )

    def forget(self, key: Key, work_type: str) -> None:
        self._entries.get(work_type, {}).pop(key, None)

    def view(self, key: Key, body: dict[str, Any]) -> QueueView | None:
        """This WorkOrder's place, counting it as waiting unless it holds a slot."""
        work_type = str((body.get("spec") or {}).get("workType", ""))
        if work_type not in self.limits:
            return None
        entries = dict(self._entries[work_type])
        own = entries.get(key)
        if own is None or not own.active:
            entries[key] = QueueEntry(
                key=key,
                priority=int((body.get("spec") or {}).get("priority") or 0),
                created=str(body["metadata"].get("creationTimestamp", "")),
                active=False,
                waiting=True,
            )
        return admit(entries.values(), self.limits[work_type])[key]

    def admitting(self, work_type: str) -> asyncio.Lock | None:
        return self._locks.get(work_type)

    def next_up(self, work_type: str, top: int = SHOWN_POSITIONS) -> Iterator[Key]:
        """After a slot changed hands: the waiting WorkOrders free slots now go to, and
        the first `top` behind them, whose positions moved (to be looked at again). The
        positions further back are refreshed when those WorkOrders are next looked at:
        rewriting every queued status at every admission would cost a write each."""
        entries = self._entries.get(work_type)
        if not entries:
            return iter(())
        views = admit(entries.values(), self.limits[work_type])
        return (
            k
            for k, v in views.items()
            if not entries[k].active and (v.admitted or v.position <= top)
        )
