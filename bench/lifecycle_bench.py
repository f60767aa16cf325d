"""Measure workgate against a real API server; prints figures, asserts nothing.

    python bench/lifecycle_bench.py [--workorders 200] [--signals 100]

Uses $KUBECONFIG (e.g. from `workgate dev up`). Starts its own operator process and
plays the Shipwright controller. Reports:
  - API writes per successful build WorkOrder, from the API server's
    apiserver_request_total (minus the bench's own writes and an idle baseline of the
    same length), next to the operator's own count of its writes;
  - apply -> BuildRun-created latency (median, p99) over N WorkOrders;
  - signal -> resume latency (median, p99): Signal created by the reviewer flow of
    `kubectl workgate signal` until the WorkOrder leaves WAITING.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from workgate.cli.kubectl_plugin import send_signal
from workgate.k8s.api import BUILDRUNS, NAMESPACES, WORKORDERS, KubeApi

WRITE_VERBS = {"POST", "PUT", "PATCH", "APPLY", "DELETE"}
METRIC = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+]+)$")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def write_counts(api: KubeApi) -> Counter[str]:
    counts: Counter[str] = Counter()
    for line in (await api.get_text("/metrics")).splitlines():
        match = METRIC.match(line)
        if not match:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
        if labels.get("verb") in WRITE_VERBS:
            resource = labels.get("resource", "")
            if labels.get("subresource"):
                resource += "/" + labels["subresource"]
            counts[f"{labels['verb']} {resource}"] += int(float(match["value"]))
    return counts


def summary(seconds: list[float]) -> str:
    median, p99 = statistics.median(seconds) * 1000, percentile(seconds, 0.99) * 1000
    return f"median {median:.0f} ms, p99 {p99:.0f} ms, max {max(seconds) * 1000:.0f} ms"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def start_operator(namespace: str, log: Path, webhook: bool) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "WORKGATE_NAMESPACES": namespace,
        "WORKGATE_WEBHOOK": "on" if webhook else "off",
        "WORKGATE_WEBHOOK_PORT": str(free_port()),
        "WORKGATE_WEBHOOK_CONFIG": f"{namespace}.bench.workgate.io",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "workgate.cli.main", "run"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def build_workorder(
    name: str, gates: list[dict[str, Any]] | None = None, work_type: str = "build"
) -> dict[str, Any]:
    yaml = (
        "apiVersion: shipwright.io/v1beta1\nkind: Build\nmetadata:\n  name: b\nspec:\n"
        "  source: {type: Git, git: {url: https://git.example.com/app}}\n"
        "  strategy: {name: buildah, kind: ClusterBuildStrategy}\n"
        "  output: {image: registry.example.com/app:latest}\n"
    )
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
            if kind == "ADDED" and name not in run_seen:
                run_seen[name] = time.monotonic()
                condition = {
                    "type": "Succeeded",
                    "status": "True",
                    "reason": "Succeeded",
                    "message": "done",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
                await api.merge_patch(
                    BUILDRUNS.path(namespace, name, "status"),
                    {"status": {"conditions": [condition]}},
                )
                finished += 1
                if finished == total:
                    return

    async def watch_done() -> set[str]:
        done: set[str] = set()
        async for _, wo in api.watch(WORKORDERS.path(namespace), timeout_seconds=600):
            if (wo.get("status") or {}).get("phase") == "SUCCEEDED":
                done.add(wo["metadata"]["name"])
                if len(done) == total:
                    return done
        return done

    before = await write_counts(api)
    t_start = time.monotonic()
    runs = asyncio.create_task(watch_runs())
    done = asyncio.create_task(watch_done())
    await asyncio.sleep(0.5)
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


async def bench_signals(api: KubeApi, namespace: str, total: int) -> None:
    gates = [{"key": "go", "stage": "BeforeExecution", "requiredSignalNames": ["approve"]}]
    for i in range(total):
        await api.create(
            WORKORDERS.path(namespace), build_workorder(f"gated-{i:04d}", gates, "bench")
        )

    async def all_active() -> bool:
        listing = await api.get(f"/apis/workgate.io/v1alpha1/namespaces/{namespace}/waitpoints")
        return (
            sum((wp.get("status") or {}).get("state") == "active" for wp in listing["items"])
            == total
        )

    while not await all_active():  # noqa: ASYNC110 - polling the API server, not a local flag
        await asyncio.sleep(0.2)
    resumed: dict[str, float] = {}
    waiters: dict[str, asyncio.Event] = {}

    async def watch() -> None:
        async for _, wo in api.watch(WORKORDERS.path(namespace), timeout_seconds=600):
            name = wo["metadata"]["name"]
            if (
                (wo.get("status") or {}).get("phase") == "PENDING"
                and name in waiters
                and name not in resumed
            ):
                resumed[name] = time.monotonic()
                waiters[name].set()

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.5)
    latencies = []
    for i in range(total):
        name = f"gated-{i:04d}"
        waiters[name] = asyncio.Event()
        sent = time.monotonic()
        await send_signal(api, namespace, f"{name}.go", "approve")
        await asyncio.wait_for(waiters[name].wait(), timeout=30)
        latencies.append(resumed[name] - sent)
    watcher.cancel()
    print(f"\n== {total} signals, one at a time (`kubectl workgate signal`'s flow, webhook on)")
    print(f"signal -> resume latency: {summary(latencies)}")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workorders", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0, help="WorkOrders created per second")
    parser.add_argument("--signals", type=int, default=100)
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="workgate-bench-"))
    async with KubeApi() as api:
        for kind, count in (("wo", args.workorders), ("sig", args.signals)):
            if not count:
                continue
            namespace = f"bench-{kind}-{uuid.uuid4().hex[:6]}"
            await api.create(NAMESPACES.path(), {"metadata": {"name": namespace}})
            operator = start_operator(namespace, logs / f"{namespace}.log", webhook=kind == "sig")
            try:
                await asyncio.sleep(3)
                if kind == "wo":
                    await bench_workorders(api, namespace, count, args.rate)
                else:
                    await bench_signals(api, namespace, count)
            finally:
                operator.terminate()
                await asyncio.to_thread(operator.wait, 15)
                await api.request(
                    "DELETE",
                    "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/"
                    f"{namespace}.bench.workgate.io",
                )
                await api.request("DELETE", NAMESPACES.path(None, namespace))
    print(f"\noperator logs: {logs}")


if __name__ == "__main__":
    asyncio.run(main())
