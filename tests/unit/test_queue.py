"""The work queue's lanes: finished work (low) waits behind pending work, is never starved,
and moves up when it is added normally; outcomes (urgent) go before new work, a few at a
time, and never starve it either."""

import asyncio
import logging
from collections.abc import Callable

import pytest

from workgate.k8s.api import ApiError
from workgate.operator.queue import LOW_EVERY, URGENT_EVERY, WorkQueue


class Recorder:
    """A handler that records the keys in the order handled; `reached(n)` waits for n."""

    def __init__(self, hold: str | None = None) -> None:
        self.order: list[str] = []
        self.hold = hold  # the first time this key is handled, wait for `release`
        self.release = asyncio.Event()
        self._changed = asyncio.Event()

    async def __call__(self, key: str) -> None:
        self.order.append(key)
        self._changed.set()
        if key == self.hold and self.order.count(key) == 1:
            await self.release.wait()

    async def reached(self, count: int) -> None:
        async with asyncio.timeout(10):
            while len(self.order) < count:
                self._changed.clear()
                await self._changed.wait()


async def drain(queue: WorkQueue[str], handler: Recorder, count: int) -> None:
    runner = asyncio.create_task(queue.run())
    try:
        await handler.reached(count)
    finally:
        runner.cancel()


async def while_busy(
    queue: WorkQueue[str], handler: Recorder, adds: Callable[[], None], count: int
) -> None:
    """Run the queue; once the held key is being handled, `adds()`, release it, and wait
    until `count` keys were handled."""
    runner = asyncio.create_task(queue.run())
    try:
        await handler.reached(1)
        adds()
        handler.release.set()
        await handler.reached(count)
    finally:
        runner.cancel()


async def test_normal_keys_go_first_with_one_low_key_after_every_few() -> None:
    handler = Recorder()
    queue: WorkQueue[str] = WorkQueue(handler, workers=1)
    for i in range(20):
        queue.add(f"done-{i}", low=True)
    for i in range(2 * LOW_EVERY):
        queue.add(f"pending-{i}")
    assert len(queue) == 20 + 2 * LOW_EVERY and queue.low_waiting == 20
    await drain(queue, handler, 20 + 2 * LOW_EVERY)
    order = handler.order
    first = order[: 2 * (LOW_EVERY + 1)]
    # LOW_EVERY pending, one finished, LOW_EVERY pending, one finished; then the rest
    assert first[LOW_EVERY] == "done-0" and first[2 * LOW_EVERY + 1] == "done-1"
    pending = [k for k in first if k.startswith("pending-")]
    assert pending == [f"pending-{i}" for i in range(2 * LOW_EVERY)]
    assert order[2 * (LOW_EVERY + 1) :] == [f"done-{i}" for i in range(2, 20)]


async def test_a_low_key_added_normally_is_promoted_and_processed_once() -> None:
    handler = Recorder()
    queue: WorkQueue[str] = WorkQueue(handler, workers=1)
    for i in range(5):
        queue.add(f"done-{i}", low=True)
    queue.add("pending")
    queue.add("done-3")  # promoted: before the other finished ones
    queue.add("done-3", low=True)  # a low add never demotes it
    queue.add("pending", low=True)
    assert len(queue) == 6 and queue.low_waiting == 4
    await drain(queue, handler, 6)
    assert handler.order == ["pending", "done-3", "done-0", "done-1", "done-2", "done-4"]


async def test_a_key_added_while_active_runs_again_in_the_lane_of_its_most_urgent_add() -> None:
    handler = Recorder(hold="busy")
    queue: WorkQueue[str] = WorkQueue(handler, workers=1)
    queue.add("busy")

    def adds() -> None:
        for i in range(3):
            queue.add(f"done-{i}", low=True)
        queue.add("busy", low=True)
        queue.add("busy")  # normal: it goes before the finished ones
        queue.add("busy", low=True)

    await while_busy(queue, handler, adds, 5)
    assert handler.order == ["busy", "busy", "done-0", "done-1", "done-2"]
    assert len(queue) == 0


async def test_outcomes_go_first_a_few_at_a_time_and_a_waiting_key_moves_up() -> None:
    handler = Recorder()
    queue: WorkQueue[str] = WorkQueue(handler, workers=1)
    for i in range(3):
        queue.add(f"new-{i}")
    queue.add("done-0", low=True)
    for i in range(URGENT_EVERY + 2):
        queue.add(f"report-{i}", urgent=True)
    queue.add("new-2", urgent=True)  # its outcome came while it waited: it moves up
    queue.add("report-0")  # a normal add never demotes it
    queue.add("report-1", low=True)
    total = 3 + 1 + URGENT_EVERY + 2
    assert len(queue) == total and queue.low_waiting == 1
    await drain(queue, handler, total)
    urgent = [f"report-{i}" for i in range(URGENT_EVERY + 2)] + ["new-2"]
    assert (
        handler.order
        == [
            *urgent[:URGENT_EVERY],
            "new-0",  # after URGENT_EVERY urgent ones, one normal key
            *urgent[URGENT_EVERY : 2 * URGENT_EVERY],
            "new-1",
            "done-0",
        ]
    )


async def test_an_outcome_for_a_key_being_reconciled_runs_it_again_first() -> None:
    handler = Recorder(hold="busy")
    queue: WorkQueue[str] = WorkQueue(handler, workers=1)
    queue.add("busy")

    def adds() -> None:
        queue.add("new")
        queue.add("busy")
        queue.add("busy", urgent=True)

    await while_busy(queue, handler, adds, 3)
    assert handler.order == ["busy", "busy", "new"]


async def test_a_held_low_lane_waits_until_opened_and_a_promoted_key_does_not() -> None:
    handler = Recorder()
    queue: WorkQueue[str] = WorkQueue(handler, workers=2, low_held=True)
    for i in range(3):
        queue.add(f"done-{i}", low=True)
    queue.add("pending")
    queue.add("done-2")  # promoted: it no longer waits for the lane to open
    runner = asyncio.create_task(queue.run())
    try:
        await handler.reached(2)
        queue.add("late")
        await handler.reached(3)
        assert handler.order == ["pending", "done-2", "late"] and queue.low_waiting == 2
        queue.open_low()
        await handler.reached(5)
    finally:
        runner.cancel()
    assert handler.order[3:] == ["done-0", "done-1"] and len(queue) == 0


async def test_the_low_lane_keeps_to_its_rate() -> None:
    handler = Recorder()
    queue: WorkQueue[str] = WorkQueue(handler, workers=4, low_rate=20)
    for i in range(5):
        queue.add(f"done-{i}", low=True)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await drain(queue, handler, 5)
    assert loop.time() - start >= 4 / 20  # five keys: four intervals of 50 ms at least
    assert handler.order == [f"done-{i}" for i in range(5)]


async def test_an_expected_api_error_is_one_warning_line_and_any_other_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    terminating = ApiError(403, "Forbidden", 'namespace "x" is being terminated')
    denied = ApiError(403, "Forbidden", "cannot create secrets")
    failures = {
        "gone": ApiError(404, "NotFound", "gone"),
        "lost": ApiError(409, "Conflict", "the object has been modified"),
        "going": terminating,
        "denied": denied,
        "bug": KeyError("status"),
    }
    handled = Recorder()

    async def failing(key: str) -> None:
        await handled(key)
        raise failures[key]

    queue: WorkQueue[str] = WorkQueue(failing, workers=1)
    for key in failures:
        queue.add(key)
    with caplog.at_level(logging.WARNING, logger="workgate.operator.queue"):
        await drain(queue, handled, len(failures))
    logged = {r.getMessage().split()[1].rstrip(":"): r for r in caplog.records}
    assert set(logged) == set(failures)
    quiet = {k for k, r in logged.items() if r.exc_info is None and r.levelno == logging.WARNING}
    assert quiet == {"gone", "lost", "going"}
    assert "being terminated" in logged["going"].getMessage()
    assert terminating.namespace_terminating and not denied.expected
