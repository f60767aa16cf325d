"""job_bench's restart catch-up: an operator started beside finished and pending WorkOrders."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path
from typing import Any

import _profile
from _common import watch_forever, workorder, workorder_done
from _processes import peak_rss_mb, spawn_operator
from _standins import stand_in_shipwright

from workgate.k8s.api import WORKORDERS, KubeApi


async def logged_at(log: Path, text: str, start: float, seen: dict[str, float]) -> None:
    """Note (in `seen`) when `text` first appears in `log`, in seconds since `start`."""
    while text not in seen:
        with contextlib.suppress(OSError):
            if text in await asyncio.to_thread(log.read_text, errors="replace"):
                seen[text] = time.monotonic() - start
                return
        await asyncio.sleep(0.1)


async def restart_catchup(
    api: KubeApi, namespace: str, pending: int, logs: Path, profile: Path | None, kubeconfig: Path
) -> None:
    """Create `pending` WorkOrders while no operator runs, then start one: how long until
    it has caught up with them (besides the finished ones it lists on start)?"""
    listing = await api.get(WORKORDERS.path(namespace), params={"limit": "1"})
    finished = int(listing["metadata"].get("remainingItemCount", 0)) + len(listing["items"])
    semaphore = asyncio.Semaphore(16)
    created: dict[str, float] = {}

    async def create(index: int) -> None:
        async with semaphore:
            body = workorder(f"late-{index}", "build")
            await api.create(WORKORDERS.path(namespace), body)
            created[body["metadata"]["name"]] = time.monotonic()

    await asyncio.gather(*(create(i) for i in range(pending)))
    done: dict[str, float] = {}
    finished_all = asyncio.Event()
    start = 0.0

    async def on_event(_: KubeApi, kind: str, body: Any) -> None:
        name = body["metadata"]["name"]
        if name in created and name not in done and workorder_done(body) and start:
            done[name] = time.monotonic() - start
            if len(done) >= pending:
                finished_all.set()

    listed = [asyncio.Event(), asyncio.Event()]  # the clock starts once both have listed
    watcher = asyncio.create_task(
        watch_forever(WORKORDERS.path(namespace), {}, on_event, listed[0])
    )
    marked: set[str] = set()
    shipwright = asyncio.create_task(stand_in_shipwright(namespace, marked, listed[1]))
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in listed)), timeout=120)
    await asyncio.sleep(1)
    start = time.monotonic()
    log = logs / "operator-restarted.log"
    operator = spawn_operator(namespace, log, kubeconfig)
    seen: dict[str, float] = {}
    synced = asyncio.create_task(logged_at(log, "watches synced", start, seen))
    profiler = None
    if profile is not None:
        profiler = _profile.record(operator.pid, profile / "operator-catchup.raw")
    try:
        await asyncio.wait_for(finished_all.wait(), timeout=600)
        seconds = time.monotonic() - start
        times = sorted(done.values())
        print(
            f"restart catch-up: {finished} finished + {pending} pending WorkOrders; "
            f"operator start -> all {pending} SUCCEEDED in {seconds:.1f}s "
            f"(first {times[0]:.1f}s, half {times[len(times) // 2]:.1f}s; "
            f"watches synced {seen.get('watches synced', float('nan')):.1f}s); "
            f"peak RSS {peak_rss_mb(operator.pid):.0f} MB",
            flush=True,
        )
    finally:
        synced.cancel()
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(30)
        watcher.cancel()
        shipwright.cancel()
        operator.terminate()
        operator.wait(15)
