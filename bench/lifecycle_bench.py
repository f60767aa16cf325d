"""Measure workgate against a real API server; prints figures, asserts nothing.

    .venv/bin/python bench/lifecycle_bench.py [--workorders 200] [--signals 100]
        [--signal-rate 50] [--profile DIR]

Runs against the configured cluster ($KUBECONFIG, ~/.kube/config), else a control plane
started by `workgate dev up`, else an embedded control plane it starts (and stops) for
this run alone, so it works from a fresh clone after `make install`. Starts its own
operator process per part, in a namespace of its own, and plays the Shipwright
controller. Reports:
  - API writes per successful build WorkOrder, from the API server's
    apiserver_request_total (minus the bench's own writes and an idle baseline of the
    same length), next to the operator's own count of its writes;
  - apply -> BuildRun-created latency (median, p99) over N WorkOrders;
  - signal -> resume latency, with the operator's webhook on. N WorkOrders (work type
    `bench`, which nothing claims) each wait at one gate, all waitpoints active. Signal i
    is started at i / rate seconds (--signal-rate; 0: one after the other), each in a task
    of its own, so a slow one never delays the next: it runs `kubectl workgate signal`'s
    flow (read the waitpoint and its token Secret, ask who we are, compute the proof,
    create the Signal through the validating webhook). Measured, per signal:
      signal -> resume: from the moment the Signal's create request is sent until a watch
      of the WorkOrders (opened before the first signal, from a listing in which all are
      WAITING) delivers the WorkOrder out of WAITING. It is split into admission (create
      sent -> create answered: the webhook's judgement) and the operator's path after it
      (create answered -> out of WAITING: Signal watch, waitpoint reconcile, its status,
      WorkOrder reconcile, its status, and the watch event back to the bench);
      whole command: from the start of the flow (its reads and proof included).
    The achieved rate is that of the create requests actually sent, (N - 1) / (last send
    - first send); "behind schedule" is how late each flow started (the bench's own lag).
    Figures: median, p99, max. Then the API requests per signal, by verb and resource,
    from apiserver_request_total (client, admission and operator together; the operator's
    Events, sent in the background, are waited for). --profile DIR: py-spy samples the
    operator meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import _profile
from _common import (
    BUILD_YAML,
    WRITES,
    cluster,
    delete_if_present,
    free_port,
    namespace_gone,
    percentile,
    requests,
    wait_until,
)

from workgate.cli.kubectl_plugin import prepare_signal
from workgate.k8s.api import (
    BUILDRUNS,
    NAMESPACES,
    SIGNALS,
    WAITPOINTS,
    WORKORDERS,
    KubeApi,
)

WEBHOOKS = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"


async def write_counts(api: KubeApi) -> Counter[str]:
    """`VERB resource[/sub]` -> count of the write requests the API server has served."""
    return Counter({k: v for k, v in (await requests(api)).items() if k.split()[0] in WRITES})


def summary(seconds: list[float]) -> str:
    median, p99 = statistics.median(seconds) * 1000, percentile(seconds, 0.99) * 1000
    return f"median {median:.0f} ms, p99 {p99:.0f} ms, max {max(seconds) * 1000:.0f} ms"


def webhook_config_name(namespace: str) -> str:
    return f"{namespace}.bench.workgate.io"


def start_operator(namespace: str, log: Path, webhook: bool) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "WORKGATE_NAMESPACES": namespace,
        "WORKGATE_WEBHOOK": "on" if webhook else "off",
        "WORKGATE_METRICS_PORT": "off",
    }
    if webhook:
        env["WORKGATE_WEBHOOK_PORT"] = str(free_port())
        env["WORKGATE_WEBHOOK_CONFIG"] = webhook_config_name(namespace)
    return subprocess.Popen(
        [sys.executable, "-m", "workgate.cli.main", "run"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


async def operator_ready(
    api: KubeApi, namespace: str, webhook: bool, operator: subprocess.Popen[bytes]
) -> None:
    """Measure a running operator, not its start-up: one warm-up build WorkOrder goes all
    the way through first (and, with the webhook on, its registration is in place)."""

    async def alive_and(probe: Callable[[], Awaitable[Any]]) -> Any:
        if operator.poll() is not None:
            raise SystemExit(f"the operator exited with {operator.returncode}; see its log")
        return await probe()

    await api.create(WORKORDERS.path(namespace), build_workorder("warm-up"))
    run = BUILDRUNS.path(namespace, "warm-up-a1")
    await wait_until(lambda: alive_and(lambda: api.get(run)), "the warm-up BuildRun")
    await finish_build_run(api, namespace, "warm-up-a1")

    async def succeeded() -> bool:
        wo = await api.get(WORKORDERS.path(namespace, "warm-up"))
        return (wo.get("status") or {}).get("phase") == "SUCCEEDED"

    # Left in place (finished: no more writes); deleting it now would have the garbage
    # collector's deletes of its children land in the measured window.
    await wait_until(lambda: alive_and(succeeded), "the warm-up WorkOrder")
    if webhook:
        config = f"{WEBHOOKS}/{webhook_config_name(namespace)}"
        await wait_until(lambda: alive_and(lambda: api.get(config)), "the webhook registration")


async def finish_build_run(api: KubeApi, namespace: str, name: str) -> None:
    """Play the Shipwright controller: the BuildRun succeeded."""
    condition = {
        "type": "Succeeded",
        "status": "True",
        "reason": "Succeeded",
        "message": "done",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    await api.merge_patch(
        BUILDRUNS.path(namespace, name, "status"), {"status": {"conditions": [condition]}}
    )


def build_workorder(
    name: str, gates: list[dict[str, Any]] | None = None, work_type: str = "build"
) -> dict[str, Any]:
    # Each WorkOrder its own Build: one named like another WorkOrder's is refused (NameTaken).
    yaml = BUILD_YAML.replace("{name}", f"{name}-build")
    return {
        "apiVersion": "workgate.io/v1alpha1",
        "kind": "WorkOrder",
        "metadata": {"name": name},
        "spec": {
            "workType": work_type,
            "yamlContent": yaml if work_type == "build" else "a: 1\n",
            "gates": gates or [],
        },
    }


async def bench_workorders(api: KubeApi, namespace: str, total: int, rate: float) -> None:
    created_at: dict[str, float] = {}
    run_seen: dict[str, float] = {}
    finished = 0

    async def watch_runs() -> None:
        nonlocal finished
        async for kind, run in api.watch(BUILDRUNS.path(namespace), timeout_seconds=600):
            name = run["metadata"]["name"]
            if kind == "ADDED" and name not in run_seen and name.startswith("wo-"):
                run_seen[name] = time.monotonic()
                await finish_build_run(api, namespace, name)
                finished += 1
                if finished == total:
                    return

    async def watch_done() -> set[str]:
        done: set[str] = set()
        async for _, wo in api.watch(WORKORDERS.path(namespace), timeout_seconds=600):
            name = wo["metadata"]["name"]
            if (wo.get("status") or {}).get("phase") == "SUCCEEDED" and name.startswith("wo-"):
                done.add(name)
                if len(done) == total:
                    return done
        return done

    before = await write_counts(api)
    t_start = time.monotonic()
    runs = asyncio.create_task(watch_runs())
    done = asyncio.create_task(watch_done())
    await asyncio.sleep(0.5)  # let both watches open before the first create
    for i in range(total):
        name = f"wo-{i:04d}"
        created_at[name] = time.monotonic()
        await api.create(WORKORDERS.path(namespace), build_workorder(name))
        await asyncio.sleep(1 / rate)
    await asyncio.wait_for(asyncio.gather(runs, done), timeout=600)
    await asyncio.sleep(2)  # let the last releases and Events land
    elapsed = time.monotonic() - t_start
    after = await write_counts(api)
    # An idle baseline of the same length: controller-manager and others write too.
    idle_before = await write_counts(api)
    await asyncio.sleep(min(elapsed, 30))
    idle_after = await write_counts(api)
    idle_scale = elapsed / min(elapsed, 30)
    delta = after - before
    idle = Counter({k: round((idle_after[k] - idle_before[k]) * idle_scale) for k in idle_after})
    own = Counter({"POST workorders": total, "PATCH buildruns/status": total})
    operator = Counter({k: v - own.get(k, 0) - idle.get(k, 0) for k, v in delta.items()})
    operator = Counter({k: v for k, v in operator.items() if v > 0})
    latencies = [run_seen[f"wo-{i:04d}-a1"] - created_at[f"wo-{i:04d}"] for i in range(total)]
    print(f"\n== {total} build WorkOrders, created at {rate:g}/s, all SUCCEEDED in {elapsed:.1f}s")
    print("API writes by the operator (server-side apiserver_request_total delta):")
    for key, value in sorted(operator.items()):
        print(f"  {key:40s} {value:6d}  ({value / total:.2f} per WorkOrder)")
    writes = sum(operator.values())
    print(f"  {'total':40s} {writes:6d}  ({writes / total:.2f} per WorkOrder)")
    print(f"apply -> BuildRun created latency: {summary(latencies)}")


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
            await api.create(WORKORDERS.path(namespace), build_workorder(name, gates, "bench"))

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


async def bench(args: argparse.Namespace, where: str) -> None:
    logs = Path(tempfile.mkdtemp(prefix="workgate-bench-"))
    print(f"measuring on {where}", flush=True)
    async with KubeApi() as api:
        for kind, count in (("wo", args.workorders), ("sig", args.signals)):
            if not count:
                continue
            namespace = f"bench-{kind}-{uuid.uuid4().hex[:6]}"
            webhook = kind == "sig"
            await api.create(NAMESPACES.path(), {"metadata": {"name": namespace}})
            operator = start_operator(namespace, logs / f"{namespace}.log", webhook)
            try:
                await operator_ready(api, namespace, webhook, operator)
                if kind == "wo":
                    await bench_workorders(api, namespace, count, args.rate)
                else:
                    await bench_signals(
                        api, namespace, count, args.signal_rate, args.profile, operator.pid
                    )
            finally:
                operator.terminate()
                await asyncio.to_thread(operator.wait, 15)
                # Only what this part made: the webhook registration exists only when the
                # operator ran with the webhook on (a failurePolicy Fail registration
                # whose server is gone would refuse requests), then the namespace.
                if webhook:
                    await delete_if_present(api, f"{WEBHOOKS}/{webhook_config_name(namespace)}")
                await delete_if_present(api, NAMESPACES.path(None, namespace))
                # The next part is measured on a quiet server: the garbage collector's
                # deletes of this part's objects would otherwise be counted, and slow it.
                await namespace_gone(api, namespace)
    print(f"\noperator logs: {logs}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workorders", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0, help="WorkOrders created per second")
    parser.add_argument("--signals", type=int, default=100)
    parser.add_argument(
        "--signal-rate", type=float, default=0.0, help="signals per second (0: one at a time)"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="py-spy samples the operator while it is signalled (raw file in DIR)",
    )
    args = parser.parse_args()
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    with cluster() as where:
        asyncio.run(bench(args, where))


if __name__ == "__main__":
    main()
