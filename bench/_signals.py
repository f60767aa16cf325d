"""lifecycle_bench's signal part: signal -> resume latency at a given rate, through
`kubectl workgate signal`'s flow, and the API requests per signal (see lifecycle_bench.py)."""

from __future__ import annotations

import asyncio
import signal
import statistics
import time
from collections import Counter
from pathlib import Path

import _profile
from _common import percentile, requests, wait_until, workorder

from workgate.cli.kubectl_plugin import prepare_signal
from workgate.k8s.api import SIGNALS, WAITPOINTS, WORKORDERS, KubeApi


def summary(seconds: list[float]) -> str:
    median, p99 = statistics.median(seconds) * 1000, percentile(seconds, 0.99) * 1000
    return f"median {median:.0f} ms, p99 {p99:.0f} ms, max {max(seconds) * 1000:.0f} ms"


async def bench_signals(
    api: KubeApi, namespace: str, total: int, rate: float, profile: Path | None, pid: int
) -> None:
    # The bench's one user both creates and approves: self-approval must be allowed.
    gates = [
        {
            "key": "go",
            "stage": "BeforeExecution",
            "requiredSignalNames": ["approve"],
            "forbidSelfApproval": False,
        }
    ]
    names = [f"gated-{i:04d}" for i in range(total)]
    semaphore = asyncio.Semaphore(16)

    async def create(name: str) -> None:
        async with semaphore:
            await api.create(WORKORDERS.path(namespace), workorder(name, "bench", gates))

    await asyncio.gather(*(create(name) for name in names))

    async def all_active() -> bool:
        listing = await api.get(WAITPOINTS.path(namespace))
        states = [(wp.get("status") or {}).get("state") for wp in listing["items"]]
        return states.count("active") == total

    await wait_until(all_active, f"{total} active waitpoints", seconds=60 + total)
    # Resumed: the first watch event showing the WorkOrder out of WAITING. The watch
    # starts from a listing in which every gated WorkOrder is WAITING.
    listing = await api.get(WORKORDERS.path(namespace))
    waiting = {
        wo["metadata"]["name"]
        for wo in listing["items"]
        if (wo.get("status") or {}).get("phase") == "WAITING"
    }
    if not waiting.issuperset(names):
        raise SystemExit(f"only {len(waiting & set(names))} of {total} WorkOrders are WAITING")
    resumed: dict[str, float] = {}
    events = {name: asyncio.Event() for name in names}

    async def watch() -> None:
        params = {"resourceVersion": listing["metadata"]["resourceVersion"]}
        async for _, wo in api.watch(WORKORDERS.path(namespace), params=params):
            name = wo["metadata"]["name"]
            phase = (wo.get("status") or {}).get("phase")
            if name in events and name not in resumed and phase != "WAITING":
                resumed[name] = time.monotonic()
                events[name].set()

    watcher = asyncio.create_task(watch())
    closed: dict[str, float] = {}  # when a watch shows the gate closed (by the operator)

    async def watch_gates() -> None:
        async for _, wp in api.watch(WAITPOINTS.path(namespace)):
            name = wp["metadata"]["name"].removesuffix(".go")
            if (wp.get("status") or {}).get("state") == "closed" and name not in closed:
                closed[name] = time.monotonic()

    gate_watcher = asyncio.create_task(watch_gates())
    turn: dict[str, float] = {}  # when the reviewer starts `kubectl workgate signal`
    sent: dict[str, float] = {}  # when the Signal's create request goes out
    answered: dict[str, float] = {}  # when the create (admission included) returned

    async def one(name: str) -> None:
        turn[name] = time.monotonic()
        body = await prepare_signal(api, namespace, f"{name}.go", "approve")
        sent[name] = time.monotonic()
        await api.create(SIGNALS.path(namespace), body)
        answered[name] = time.monotonic()
        await asyncio.wait_for(events[name].wait(), timeout=120)

    profiler = _profile.record(pid, profile / "operator-signals.raw") if profile else None
    counted = await api_requests(api)
    start = time.monotonic()
    try:
        if rate:  # signal i is started at start + i / rate, whatever the others are doing
            tasks = []
            for i, name in enumerate(names):
                await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
                tasks.append(asyncio.create_task(one(name)))
            await asyncio.gather(*tasks)
        else:
            for name in names:
                await one(name)
    finally:
        watcher.cancel()
        gate_watcher.cancel()
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            await asyncio.to_thread(profiler.wait, 30)
    first, last = min(sent.values()), max(sent.values())
    achieved = (total - 1) / (last - first) if total > 1 and last > first else 0.0
    asked = f"asked {rate:g}/s" if rate else "one at a time"
    print(f"\n== {total} signals, {asked}: Signal creates sent at {achieved:.1f}/s")
    print("(`kubectl workgate signal`'s flow, one task per signal, webhook on)")
    if rate:
        late = [turn[n] - (start + i / rate) for i, n in enumerate(names)]
        print(f"  commands started behind schedule: {summary(late)}")
    figures = (
        ("signal -> resume (create sent -> out of WAITING)", sent, resumed),
        ("  admission (create sent -> create answered)", sent, answered),
        ("  create answered -> out of WAITING", answered, resumed),
        ("    create answered -> gate closed", answered, closed),
        ("    gate closed -> out of WAITING", closed, resumed),
        ("whole command (its reads and proof too)", turn, resumed),
    )
    for label, since, until in figures:
        print(f"{label:50s} {summary([until[n] - since[n] for n in names])}")
    await print_requests(api, counted, total, time.monotonic() - start)
    if profile:
        print("operator profile while signalled (py-spy):")
        print(_profile.summarise(profile / "operator-signals.raw"))


async def api_requests(api: KubeApi) -> Counter[str]:
    """`VERB resource[/sub]` -> requests served (the /metrics scrapes themselves left out)."""
    return Counter({k: v for k, v in (await requests(api)).items() if not k.endswith(" ")})


async def print_requests(api: KubeApi, before: Counter[str], total: int, elapsed: float) -> None:
    """API requests per signal, from the API server's apiserver_request_total: everything
    served from the first signal until Events stop coming (the operator sends them in the
    background), minus an idle baseline of the same length."""
    settling = time.monotonic()
    after = await api_requests(api)
    while time.monotonic() < settling + 30:
        await asyncio.sleep(1.0)
        now = await api_requests(api)
        if now["POST events"] == after["POST events"]:  # the background Events are out
            break
        after = now
    elapsed += time.monotonic() - settling
    idle_before = await api_requests(api)
    await asyncio.sleep(min(elapsed, 10))
    idle = (await api_requests(api)) - idle_before
    scale = elapsed / min(elapsed, 10)
    delta = Counter({k: v - round(idle.get(k, 0) * scale) for k, v in (after - before).items()})
    rows = [(k, v) for k, v in delta.most_common() if v / total >= 0.05]
    print("API requests per signal (apiserver_request_total, minus idle):")
    for key, value in rows:
        print(f"  {key:40s} {value:6d}  ({value / total:.2f} per signal)")
    print(f"  {'total':40s} {sum(v for _, v in rows):6d}  ({sum(v for _, v in rows) / total:.2f})")
