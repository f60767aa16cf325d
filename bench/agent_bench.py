"""The agent path against the operator's own `build` path, side by side on one API server.
Prints figures, asserts nothing.

    python bench/agent_bench.py [--workorders 500] [--agents 10] [--profile DIR]

Uses $KUBECONFIG, best a bare plane (`workgate dev up --bare --detach`, then
`eval "$(workgate dev env)"`): the bench plays Shipwright itself, so a real Shipwright
controller must not race it. Starts an operator (webhook off, scoped
to a fresh namespace; it and the agents authenticate as ServiceAccounts, with tokens, as
pods in a cluster do) and then, one after the other in the same run:
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
import re
import signal
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import _common
import _profile
from _common import (
    CpuMeter,
    busiest_writes,
    idle_rate,
    peak_rss_mb,
    percentile,
    plane_pids,
    requests,
    service_account,
    spawn,
    spawn_operator,
    workorder,
    writes,
)
from _standins import stand_in_shipwright

from workgate.core.claims import ANNOTATION_RESULT
from workgate.k8s.api import LEASES, NAMESPACES, WORKORDERS, KubeApi


async def drain(
    api: KubeApi, namespace: str, work_type: str, total: int, done: dict[str, float] | None = None
) -> float:
    """Create `total` WorkOrders (16 at a time); seconds until the last is SUCCEEDED.
    `done` gets the monotonic time each was seen SUCCEEDED, by name."""
    params = {"fieldSelector": f"spec.workType={work_type},status.phase=SUCCEEDED"}
    bodies = [workorder(f"{work_type}-{index}", work_type) for index in range(total)]
    seen = done if done is not None else {}

    def succeeded(body: Any) -> bool:
        seen.setdefault(body["metadata"]["name"], time.monotonic())
        return True

    seconds, _ = await _common.drain(api, WORKORDERS.path(namespace), bodies, succeeded, params)
    return seconds


async def watch_reports(namespace: str, reported: dict[str, float]) -> None:
    """The monotonic time each claim Lease first carried an outcome, by WorkOrder name."""

    async def on_event(_: KubeApi, kind: str, lease: Any) -> None:
        annotations = lease["metadata"].get("annotations") or {}
        if kind != "DELETED" and annotations.get(ANNOTATION_RESULT):
            for ref in lease["metadata"].get("ownerReferences") or []:
                reported.setdefault(str(ref.get("name")), time.monotonic())

    await _common.watch_forever(LEASES.path(namespace), {}, on_event)


def timeline(started: float, reported: dict[str, float], done: dict[str, float]) -> str:
    """When the outcomes landed on the Leases and when the operator recorded them."""
    if not reported or not done:
        return "(no timeline)"
    lags = sorted(done[name] - reported[name] for name in done if name in reported)
    return (
        f"last report at {max(reported.values()) - started:.2f}s, last SUCCEEDED at "
        f"{max(done.values()) - started:.2f}s; report -> SUCCEEDED p50 "
        f"{1000 * percentile(lags, 0.5):.0f} ms, p99 {1000 * percentile(lags, 0.99):.0f} ms"
    )


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
    print("  writes by kind: " + busiest_writes(delta))
    return rate


async def main(args: argparse.Namespace) -> None:
    namespace = f"bench-agents-{uuid.uuid4().hex[:6]}"
    log_dir = Path(tempfile.mkdtemp(prefix="workgate-agent-bench-"))
    async with KubeApi() as api:
        await api.create(NAMESPACES.path(), {"metadata": {"name": namespace}})
        # Both authenticate as ServiceAccounts, with tokens, as pods in a cluster do.
        async with (
            service_account(api, namespace, "operator", log_dir) as operator_config,
            service_account(api, namespace, "agent", log_dir) as agent_config,
        ):
            operator = spawn_operator(namespace, log_dir / "operator.log", operator_config)
            agents: list[subprocess.Popen[bytes]] = []
            try:
                idle = await idle_rate(api)
                print(f"idle cluster: {idle:.1f} writes/s (subtracted)")
                marked: set[str] = set()
                shipwright = asyncio.create_task(stand_in_shipwright(namespace, marked))
                plane = {name: [pid] for name, pid in plane_pids().items()}
                meter = CpuMeter({**plane, "operator": [operator.pid]})
                before = await requests(api)
                meter.start()
                seconds = await drain(api, namespace, "build", args.workorders)
                meter.stop()
                delta = await requests(api) - before
                build_rate = report(
                    "build path",
                    args.workorders,
                    seconds,
                    delta,
                    own=args.workorders + len(marked),
                    idle=idle,
                )
                print("  " + meter.summary(args.workorders))
                shipwright.cancel()

                started = await requests(api)
                for index in range(args.agents):
                    argv = ["agent", "--work-type", "bench", "--namespace", namespace]
                    argv += ["--instance", f"bench-{index}", "--", "true"]
                    agents.append(
                        spawn(argv, log_dir / f"agent-{index}.log", KUBECONFIG=str(agent_config))
                    )
                # Start-up: each agent lists WorkOrders and Leases once, then watches both (a
                # watch is counted only when it ends: the lists say the agents are up).
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    up = await requests(api) - started
                    if min(up["LIST workorders"], up["LIST leases"]) >= args.agents:
                        break
                    await asyncio.sleep(0.2)
                else:
                    raise SystemExit("the agents did not start watching within 120 s")
                pids = {**plane, "operator": [operator.pid], "agents": [a.pid for a in agents]}
                meter = CpuMeter(pids, with_children={"agents"})
                profilers = []
                if args.profile:  # py-spy on the first agent and the operator while they drain
                    args.profile.mkdir(parents=True, exist_ok=True)
                    profilers = [
                        _profile.record(agents[0].pid, args.profile / "agent-0.raw"),
                        _profile.record(operator.pid, args.profile / "operator-agents.raw"),
                    ]
                before = await requests(api)
                reported: dict[str, float] = {}
                done: dict[str, float] = {}
                reports = asyncio.create_task(watch_reports(namespace, reported))
                meter.start()
                started_at = time.monotonic()
                seconds = await drain(api, namespace, "bench", args.workorders, done)
                meter.stop()
                reports.cancel()
                for profiler in profilers:
                    profiler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
                    profiler.wait(30)
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
                    f"  LISTs of WorkOrders after the agents' start-up: {delta['LIST workorders']} "
                    f"(the bench's own watch makes 1: more would be agents re-listing); "
                    f"WATCH starts {delta['WATCH workorders']}"
                )
                print("  " + meter.summary(args.workorders))
                print(
                    "  timeline (from the drain's start, less its 0.5 s): "
                    + timeline(started_at + 0.5, reported, done)
                )
                rss = [peak_rss_mb(agent.pid) for agent in agents]
                print(f"  agent peak RSS: max {max(rss):.1f} MB, mean {sum(rss) / len(rss):.1f} MB")
                print(f"agent/build throughput: {agent_rate / build_rate:.2f}x")
            finally:
                for agent in agents:  # SIGINT: an agent logs where its time went as it stops
                    agent.send_signal(signal.SIGINT)
                operator.terminate()
                for process in (*agents, operator):
                    try:
                        process.wait(20)
                    except subprocess.TimeoutExpired:  # say, SIGINT ignored (a background job)
                        print(f"  (pid {process.pid} did not stop within 20 s: killed)")
                        process.kill()
                        process.wait()
                await api.delete(NAMESPACES.path(None, namespace))
    if agents:
        print("  agent time by phase, all agents: " + agent_timings(log_dir))
    if args.profile:
        for raw in ("agent-0.raw", "operator-agents.raw"):
            print(f"profile {raw}:\n" + _profile.summarise(args.profile / raw))
    print(f"logs: {log_dir}")


TIMING = re.compile(r"(?P<phase>[A-Za-z][\w ]*?) (?P<count>\d+)x [\d.]+ ms \((?P<total>[\d.]+) s\)")


def agent_timings(log_dir: Path) -> str:
    """The agents' own accounts (`where the time went: ...` as they stop), added up."""
    count: Counter[str] = Counter()
    total: dict[str, float] = {}
    for log in sorted(log_dir.glob("agent-*.log")):
        for line in log.read_text().splitlines():
            if "where the time went:" in line:
                for match in TIMING.finditer(line.partition("where the time went:")[2]):
                    phase = match["phase"].strip()
                    count[phase] += int(match["count"])
                    total[phase] = total.get(phase, 0.0) + float(match["total"])
    if not count:
        return "(none logged)"
    return "; ".join(
        f"{phase} {count[phase]}x mean {1000 * total[phase] / count[phase]:.1f} ms"
        for phase in total
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workorders", type=int, default=500)
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument(
        "--profile", type=Path, default=None, help="py-spy an agent and the operator into DIR"
    )
    arguments = parser.parse_args()
    with _common.cluster() as where:
        print(f"measuring on {where}", flush=True)
        asyncio.run(main(arguments))
