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
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from _common import (
    WRITES,
    cluster,
    delete_if_present,
    namespace_gone,
    requests,
    wait_until,
    workorder,
)
from _processes import free_port
from _signals import bench_signals, summary

from workgate.k8s.api import (
    BUILDRUNS,
    NAMESPACES,
    WORKORDERS,
    KubeApi,
)

WEBHOOKS = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"


async def write_counts(api: KubeApi) -> Counter[str]:
    """`VERB resource[/sub]` -> count of the write requests the API server has served."""
    return Counter({k: v for k, v in (await requests(api)).items() if k.split()[0] in WRITES})


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

    await api.create(WORKORDERS.path(namespace), workorder("warm-up", "build"))
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
        await api.create(WORKORDERS.path(namespace), workorder(name, "build"))
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
