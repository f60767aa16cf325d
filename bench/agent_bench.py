"""The agent path against the operator's own `build` path, side by side on one API server.
Prints figures, asserts nothing.

    python bench/agent_bench.py [--workorders 500] [--agents 10] [--rounds 1] [--profile DIR]

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
their LISTs of WorkOrders after start-up and their peak resident memory. `--rounds R`
runs both parts R times, alternating which goes first, and prints each round's ratio and
that of the pooled rates (the machine's load drifts; the agents start before their first
part and stay up, idle, through later build parts), and last the CPU per WorkOrder of
each path over all rounds (plane, operator, agents and bench together): steadier than
throughput when other tenants load the machine; and of that, the API server's and etcd's
(on an embedded plane): what the cluster's control plane pays per WorkOrder, where the
agents would run on worker nodes.
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
from _common import busiest_writes, idle_rate, percentile, plane_pids, requests, workorder, writes
from _processes import CpuMeter, peak_rss_mb, service_account, spawn, spawn_operator
from _standins import stand_in_shipwright

from workgate.core.claims import ANNOTATION_RESULT
from workgate.k8s.api import LEASES, NAMESPACES, WORKORDERS, KubeApi


async def drain(
    api: KubeApi,
    namespace: str,
    work_type: str,
    total: int,
    round_: int,
    done: dict[str, float] | None = None,
) -> float:
    """Create `total` WorkOrders (16 at a time); seconds until the last is SUCCEEDED.
    `done` gets the monotonic time each was seen SUCCEEDED, by name."""
    params = {"fieldSelector": f"spec.workType={work_type},status.phase=SUCCEEDED"}
    bodies = [workorder(f"{work_type}-{round_}-{i}", work_type) for i in range(total)]
    seen = done if done is not None else {}
    ours = {body["metadata"]["name"] for body in bodies}  # not an earlier round's

    def succeeded(body: Any) -> bool:
        if body["metadata"]["name"] in ours:
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


class Bench:
    """One run's operator, agents and figures; `build()` and `agents()` are its parts."""

    def __init__(self, api: KubeApi, args: argparse.Namespace, namespace: str, logs: Path) -> None:
        self.api, self.args, self.namespace, self.logs = api, args, namespace, logs
        self.idle = 0.0
        self.operator: subprocess.Popen[bytes] | None = None
        self.agent_procs: list[subprocess.Popen[bytes]] = []
        self.agent_config = Path()
        self.plane = {name: [pid] for name, pid in plane_pids().items()}
        self.rates: dict[str, list[float]] = {"build": [], "agents": []}
        # CPU seconds of everything measured (plane, operator, agents, bench), per part
        self.cpu: dict[str, list[float]] = {"build": [], "agents": []}
        # of which the API server's and etcd's: what a cluster's control plane pays,
        # wherever its agents and controllers run
        self.server_cpu: dict[str, list[float]] = {"build": [], "agents": []}

    def meter(self, agents: bool) -> CpuMeter:
        assert self.operator is not None
        pids = {**self.plane, "operator": [self.operator.pid]}
        if agents:
            pids["agents"] = [a.pid for a in self.agent_procs]
        return CpuMeter(pids, with_children={"agents"} if agents else set())

    def record_cpu(self, part: str, meter: CpuMeter) -> None:
        self.cpu[part].append(sum(meter.used.values()))
        server = ("kube-apiserver", "etcd")
        self.server_cpu[part].append(sum(meter.used.get(name, 0.0) for name in server))

    async def build(self, round_: int) -> None:
        marked: set[str] = set()
        shipwright = asyncio.create_task(stand_in_shipwright(self.namespace, marked))
        meter = self.meter(agents=False)
        before = await requests(self.api)
        meter.start()
        try:
            seconds = await drain(self.api, self.namespace, "build", self.args.workorders, round_)
        finally:
            meter.stop()
            shipwright.cancel()
        delta = await requests(self.api) - before
        total = self.args.workorders
        rate = report("build path", total, seconds, delta, own=total + len(marked), idle=self.idle)
        self.rates["build"].append(rate)
        self.record_cpu("build", meter)
        print("  " + meter.summary(total))

    async def start_agents(self) -> None:
        """Start the agents once, before the first agent part: each lists WorkOrders and
        Leases once, then watches both (a watch is counted only when it ends)."""
        started = await requests(self.api)
        for index in range(self.args.agents):
            argv = ["agent", "--work-type", "bench", "--namespace", self.namespace]
            argv += ["--instance", f"bench-{index}", "--", "true"]
            log = self.logs / f"agent-{index}.log"
            self.agent_procs.append(spawn(argv, log, KUBECONFIG=str(self.agent_config)))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            up = await requests(self.api) - started
            if min(up["LIST workorders"], up["LIST leases"]) >= self.args.agents:
                return
            await asyncio.sleep(0.2)
        raise SystemExit("the agents did not start watching within 120 s")

    async def agents(self, round_: int) -> None:
        if not self.agent_procs:
            await self.start_agents()
        assert self.operator is not None
        meter = self.meter(agents=True)
        profilers = []
        if self.args.profile and round_ == 0:  # py-spy on an agent and the operator
            self.args.profile.mkdir(parents=True, exist_ok=True)
            profilers = [
                _profile.record(self.agent_procs[0].pid, self.args.profile / "agent-0.raw"),
                _profile.record(self.operator.pid, self.args.profile / "operator-agents.raw"),
            ]
        before = await requests(self.api)
        reported: dict[str, float] = {}
        done: dict[str, float] = {}
        reports = asyncio.create_task(watch_reports(self.namespace, reported))
        meter.start()
        started_at = time.monotonic()
        try:
            total = self.args.workorders
            seconds = await drain(self.api, self.namespace, "bench", total, round_, done)
        finally:
            meter.stop()
            reports.cancel()
            for profiler in profilers:
                profiler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
                profiler.wait(30)
        delta = await requests(self.api) - before
        name = f"agent path ({self.args.agents} agents)"
        self.rates["agents"].append(report(name, total, seconds, delta, own=total, idle=self.idle))
        print(
            f"  LISTs of WorkOrders after the agents' start-up: {delta['LIST workorders']} "
            f"(the bench's own watch makes 1: more would be agents re-listing); "
            f"WATCH starts {delta['WATCH workorders']}"
        )
        self.record_cpu("agents", meter)
        print("  " + meter.summary(total))
        print(
            "  timeline (from the drain's start, less its 0.5 s): "
            + timeline(started_at + 0.5, reported, done)
        )
        rss = [peak_rss_mb(agent.pid) for agent in self.agent_procs]
        print(f"  agent peak RSS: max {max(rss):.1f} MB, mean {sum(rss) / len(rss):.1f} MB")

    def stop(self) -> None:
        # SIGTERM: an agent stops and logs where its time went (as on SIGINT, which a
        # bench started as a background job hands its children ignored).
        for agent in self.agent_procs:
            agent.send_signal(signal.SIGTERM)
        if self.operator is not None:
            self.operator.terminate()
        for process in (*self.agent_procs, *([self.operator] if self.operator else [])):
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                print(f"  (pid {process.pid} did not stop within 20 s: killed)")
                process.kill()
                process.wait()

    def ratios(self) -> None:
        builds, agents = self.rates["build"], self.rates["agents"]
        for number, (build, agent) in enumerate(zip(builds, agents, strict=True), 1):
            label = f"round {number} " if len(builds) > 1 else ""
            print(f"{label}agent/build throughput: {agent / build:.2f}x")
        if len(builds) > 1:  # equal sizes: the pooled rate is the harmonic mean
            pooled = [len(r) / sum(1 / x for x in r) for r in (builds, agents)]
            print(
                f"all {len(builds)} rounds: build {pooled[0]:.1f}/s, agents {pooled[1]:.1f}/s, "
                f"agent/build {pooled[1] / pooled[0]:.2f}x"
            )
        # What each WorkOrder cost the machine, whatever else ran on it meanwhile: steadier
        # than throughput on a shared machine, and the same ratio when both saturate it.
        per = {k: 1000 * sum(v) / (len(v) * self.args.workorders) for k, v in self.cpu.items()}
        print(
            f"CPU per WorkOrder, all rounds: build {per['build']:.1f} ms, agents "
            f"{per['agents']:.1f} ms, build/agents {per['build'] / per['agents']:.2f}x"
        )
        # The bench runs agents beside the API server; in a cluster they run on worker nodes.
        server = {
            k: 1000 * sum(v) / (len(v) * self.args.workorders) for k, v in self.server_cpu.items()
        }
        if server["agents"] > 0:
            print(
                f"API server and etcd CPU per WorkOrder, all rounds: build "
                f"{server['build']:.1f} ms, agents {server['agents']:.1f} ms, build/agents "
                f"{server['build'] / server['agents']:.2f}x"
            )


async def main(args: argparse.Namespace) -> None:
    namespace = f"bench-agents-{uuid.uuid4().hex[:6]}"
    log_dir = Path(tempfile.mkdtemp(prefix="workgate-agent-bench-"))
    async with KubeApi() as api:
        await api.create(NAMESPACES.path(), {"metadata": {"name": namespace}})
        bench = Bench(api, args, namespace, log_dir)
        # Both authenticate as ServiceAccounts, with tokens, as pods in a cluster do.
        async with (
            service_account(api, namespace, "operator", log_dir) as operator_config,
            service_account(api, namespace, "agent", log_dir) as bench.agent_config,
        ):
            bench.operator = spawn_operator(namespace, log_dir / "operator.log", operator_config)
            try:
                bench.idle = await idle_rate(api)
                print(f"idle cluster: {bench.idle:.1f} writes/s (subtracted)")
                for round_ in range(args.rounds):
                    order = [bench.build, bench.agents][:: 1 if round_ % 2 == 0 else -1]
                    if args.rounds > 1:
                        print(f"round {round_ + 1}: {', '.join(p.__name__ for p in order)}")
                    for part in order:
                        await part(round_)
                bench.ratios()
            finally:
                bench.stop()
                await api.delete(NAMESPACES.path(None, namespace))
    if bench.agent_procs:
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
        "--rounds",
        type=int,
        default=1,
        help="run both parts this many times, alternating which goes first (ABBA)",
    )
    parser.add_argument(
        "--profile", type=Path, default=None, help="py-spy an agent and the operator into DIR"
    )
    arguments = parser.parse_args()
    if arguments.rounds < 1:
        parser.error("--rounds must be at least 1")
    with _common.cluster() as where:
        print(f"measuring on {where}", flush=True)
        asyncio.run(main(arguments))
