"""Where an agent's time goes, phase by phase (waiting for work, claiming, the command,
reporting): counts and totals, logged when the agent stops. A few clock reads a cycle.

A phase cut short by cancellation (the agent stopping while it waits) is counted as
`PHASE when stopped`, not as `PHASE`: the idle wait after an agent's last WorkOrder,
until it is told to stop, says nothing about a cycle."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager


class Timings:
    def __init__(self) -> None:
        self.total: dict[str, float] = {}
        self.count: dict[str, int] = {}

    def add(self, phase: str, seconds: float) -> None:
        self.total[phase] = self.total.get(phase, 0.0) + seconds
        self.count[phase] = self.count.get(phase, 0) + 1

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        except asyncio.CancelledError:
            self.add(f"{phase} when stopped", time.monotonic() - started)
            raise
        except BaseException:
            self.add(phase, time.monotonic() - started)
            raise
        self.add(phase, time.monotonic() - started)

    def summary(self) -> str:
        """`phase: count x mean ms (total s)`, in the order the phases first happened."""
        return "; ".join(
            f"{phase} {self.count[phase]}x {1000 * total / self.count[phase]:.1f} ms "
            f"({total:.1f} s)"
            for phase, total in self.total.items()
        )
