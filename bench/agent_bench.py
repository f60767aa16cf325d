"""The agent path against the operator's own `build` path, side by side on one API server.
Prints figures, asserts nothing.

    python bench/agent_bench.py [--workorders 500] [--agents 10]

Uses $KUBECONFIG, best a bare plane (`workgate dev up --bare --detach`, then
`eval "$(workgate dev env)"`): the bench plays Shipwright itself, so a real Shipwright
controller must not race it. Starts an operator (webhook off, scoped
to a fresh namespace) and then, one after the other in the same run:
  - build: N `build` WorkOrders, with a stand-in Shipwright that marks each new BuildRun
    Succeeded (the bench measures workgate, not Shipwright);
  - agents: N WorkOrders of another type, drained by `--agents` `workgate agent` processes
    running `true`.
For each: throughput (first create to last SUCCEEDED), API writes per WorkOrder from the
API server's apiserver_request_total (minus the bench's own writes and an idle baseline
of the same length; Events included), Lease creates per WorkOrder; for the agents also
their LISTs of WorkOrders after start-up and their peak resident memory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from workgate.k8s.api import BUILDRUNS, NAMESPACES, WORKORDERS, KubeApi

WRITES = {"POST", "PUT", "PATCH", "APPLY", "DELETE"}
METRIC = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+]+)$")
BUILD_YAML = (  # each WorkOrder its own Build: a name another WorkOrder controls is refused
    "apiVersion: shipwright.io/v1beta1\nkind: Build\nmetadata:\n  name: {name}\nspec:\n"
    "  source: {type: Git, git: {url: https://git.example.com/app}}\n"
    "  strategy: {name: buildah, kind: ClusterBuildStrategy}\n"
    "  output: {image: registry.example.com/app:latest}\n"
)


async def requests(api: KubeApi) -> Counter[str]:
    """`VERB resource[/sub]` -> count, for every request the API server has served."""
    counts: Counter[str] = Counter()
    for line in (await api.get_text("/metrics")).splitlines():
        match = METRIC.match(line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
            resource = labels.get("resource", "")
            if labels.get("subresource"):
                resource += "/" + labels["subresource"]
            counts[f"{labels.get('verb')} {resource}"] += int(float(match["value"]))
    return counts


def writes(counts: Counter[str]) -> int:
    return sum(v for k, v in counts.items() if k.split()[0] in WRITES)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(argv: list[str], log: Path, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "workgate.cli.main", *argv],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def workorder(name: str, work_type: str) -> dict[str, Any]:
    return {
        "apiVersion": "workgate.io/v1alpha1",
        "kind": "WorkOrder",
        "metadata": {"name": name},
        "spec": {
            "workType": work_type,
            "yamlContent": BUILD_YAML.replace("{name}", name) if work_type == "build" else "{}",
        },
    }


async def idle_rate(api: KubeApi, seconds: float = 5.0) -> float:
    """Writes per second the cluster makes on its own (leader election and the like)."""
    before = writes(await requests(api))
    await asyncio.sleep(seconds)
    return (writes(await requests(api)) - before) / seconds


async def watch_forever(path: str, params: dict[str, str], on_event: Any) -> None:
    """Watch `path` on a client of its own, starting over (with a list) after any error."""
    while True:
        try:
            async with KubeApi() as api:
                listing = await api.get(path, params=params)
                for body in listing.get("items", []):
                    await on_event(api, "ADDED", body)
                version = listing["metadata"]["resourceVersion"]
                watch = {**params, "resourceVersion": version}
                async for kind, body in api.watch(path, params=watch, timeout_seconds=600):
                    await on_event(api, kind, body)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            print(f"  (watch of {path} restarted after {type(exc).__name__})", file=sys.stderr)
            await asyncio.sleep(0.2)


async def drain(api: KubeApi, namespace: str, work_type: str, total: int) -> float:
    """Create `total` WorkOrders (16 at a time); seconds until the last is SUCCEEDED."""
    done: set[str] = set()
    finished = asyncio.Event()

    async def on_event(_: KubeApi, kind: str, body: Any) -> None:
        if kind in ("ADDED", "MODIFIED"):
            done.add(body["metadata"]["name"])
            if len(done) >= total:
                finished.set()

    params = {"fieldSelector": f"spec.workType={work_type},status.phase=SUCCEEDED"}
    watcher = asyncio.create_task(watch_forever(WORKORDERS.path(namespace), params, on_event))
    await asyncio.sleep(0.5)
    start = time.monotonic()
    semaphore = asyncio.Semaphore(16)

    async def create(index: int) -> None:
        async with semaphore:
            body = workorder(f"{work_type}-{index}", work_type)
            await api.create(WORKORDERS.path(namespace), body)

    await asyncio.gather(*(create(i) for i in range(total)))
    try:
        await asyncio.wait_for(finished.wait(), timeout=max(120.0, total * 0.5))
    finally:
        watcher.cancel()
    return time.monotonic() - start


async def stand_in_shipwright(namespace: str, marked: set[str]) -> None:
    """Mark each new BuildRun Succeeded (one status write each: the bench's own)."""
    condition = {
        "type": "Succeeded",
        "status": "True",
        "reason": "Succeeded",
        "message": "stand-in",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }

    async def on_event(api: KubeApi, kind: str, run: Any) -> None:
        name = run["metadata"]["name"]
        if kind == "ADDED" and name not in marked and not (run.get("status") or {}):
            await api.merge_patch(
                BUILDRUNS.path(namespace, name, "status"), {"status": {"conditions": [condition]}}
            )
            marked.add(name)

    await watch_forever(BUILDRUNS.path(namespace), {}, on_event)


def report(
    name: str, total: int, seconds: float, delta: Counter[str], own: int, idle: float
) -> float:
    ours = writes(delta) - own - idle * seconds
    rate = total / seconds
    print(
        f"{name}: {total} WorkOrders in {seconds:.1f}s = {rate:.1f}/s; "
        f"{ours / total:.2f} API writes per WorkOrder (Events included); "
        f"{delta['POST leases'] / total:.2f} Lease creates, "
        f"{delta['DELETE leases'] / total:.2f} Lease deletes, "
        f"{delta['POST events'] / total:.2f} Events per WorkOrder"
    )
    busiest = [(k, v) for k, v in delta.most_common() if k.split()[0] in WRITES][:8]
    print("  writes by kind: " + ", ".join(f"{k} {v}" for k, v in busiest))
    return rate


async def main(args: argparse.Namespace) -> None:
    namespace = f"bench-agents-{uuid.uuid4().hex[:6]}"
    log_dir = Path(tempfile.mkdtemp(prefix="workgate-agent-bench-"))
    async with KubeApi() as api:
        await api.create(NAMESPACES.path(), {"metadata": {"name": namespace}})
        operator = spawn(
            ["run"],
            log_dir / "operator.log",
            WORKGATE_NAMESPACES=namespace,
            WORKGATE_WEBHOOK="off",
            WORKGATE_METRICS_PORT="off",
        )
        agents: list[subprocess.Popen[bytes]] = []
        try:
            idle = await idle_rate(api)
            print(f"idle cluster: {idle:.1f} writes/s (subtracted)")
            marked: set[str] = set()
            shipwright = asyncio.create_task(stand_in_shipwright(namespace, marked))
            before = await requests(api)
            seconds = await drain(api, namespace, "build", args.workorders)
            delta = await requests(api) - before
            build_rate = report(
                "build path",
                args.workorders,
                seconds,
                delta,
                own=args.workorders + len(marked),
                idle=idle,
            )
            shipwright.cancel()

            for index in range(args.agents):
                argv = ["agent", "--work-type", "bench", "--namespace", namespace]
                argv += ["--instance", f"bench-{index}", "--", "true"]
                agents.append(spawn(argv, log_dir / f"agent-{index}.log"))
            await asyncio.sleep(3)  # agents start and list once
            before = await requests(api)
            seconds = await drain(api, namespace, "bench", args.workorders)
            delta = await requests(api) - before
            agent_rate = report(
                f"agent path ({args.agents} agents)",
                args.workorders,
                seconds,
                delta,
                own=args.workorders,
                idle=idle,
            )
            print(
                f"  LISTs of WorkOrders during the run: {delta['LIST workorders']} "
                f"(the bench's own watch makes 1; agents' re-lists would add to it); "
                f"WATCH starts {delta['WATCH workorders']}"
            )
            rss = [peak_rss_mb(agent.pid) for agent in agents]
            print(f"  agent peak RSS: max {max(rss):.1f} MB, mean {sum(rss) / len(rss):.1f} MB")
            print(f"agent/build throughput: {agent_rate / build_rate:.2f}x")
        finally:
            for process in (*agents, operator):
                process.terminate()
            for process in (*agents, operator):
                process.wait(10)
            await api.delete(NAMESPACES.path(None, namespace))
    print(f"logs: {log_dir}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workorders", type=int, default=500)
    parser.add_argument("--agents", type=int, default=10)
    asyncio.run(main(parser.parse_args()))
