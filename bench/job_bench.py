"""workgate against the Kubernetes Job controller, side by side on one API server.
Prints figures, asserts nothing.

    .venv/bin/python bench/job_bench.py [--items 1000] [--rounds 1] [--restart-catchup 1000]
        [--profile DIR]

Uses $KUBECONFIG, else the plane of `workgate dev up`, else a bare embedded plane started for
this run (see `_common.cluster`); best a bare plane: the bench plays kubelet and Shipwright
itself. Both controllers drain `--items` items of the same shape, one after the other, each
in a namespace of its own that is deleted (and waited for) before the next part begins:
  - Job: a second kube-controller-manager (the cached build) running only the job
    controller, and a stand-in kubelet that marks each new Pod Succeeded (a status patch);
  - workgate: `build` WorkOrders drained by an operator (webhook off), and a stand-in
    Shipwright that marks each new BuildRun Succeeded.
Both controllers authenticate as ServiceAccounts, with tokens, as they do in a cluster
(the job controller through `--use-service-account-credentials`).
Each part: one warm-up item first, then creates at concurrency 16; each stand-in finishes
children 16 at a time too (a real Shipwright has workers, Pods a kubelet per node).
Throughput is first create to last done; writes per item come from apiserver_request_total,
minus the bench's own writes (creates and stand-in status patches) and an idle baseline of
the same length. `--rounds R` runs both parts R times, alternating which goes first, and
prints each round's ratio and the ratio of the pooled rates (the machine's load drifts).

`--restart-catchup P`: afterwards, with the operator stopped, P more WorkOrders are created
beside the drained ones; a new operator is started, and the bench reports the seconds until
all P are SUCCEEDED. `--profile DIR`: py-spy samples the operator while it drains.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import _common
import _profile
from _catchup import restart_catchup
from _common import (
    busiest_writes,
    cluster,
    delete_if_present,
    idle_rate,
    latency_summary,
    namespace_gone,
    plane_pids,
    requests,
    workorder,
    workorder_done,
    writes,
)
from _processes import CpuMeter, cpu_seconds, peak_rss_mb, service_account, spawn_operator
from _standins import stand_in_kubelet, stand_in_shipwright

from workgate.devcluster.build import ensure_binaries, stderr_progress
from workgate.k8s.api import NAMESPACES, WORKORDERS, ApiError, KubeApi, ResourceRef

JOBS = ResourceRef("batch", "v1", "jobs")
SERVICEACCOUNTS = ResourceRef("", "v1", "serviceaccounts")
CREATED_NAMESPACES: list[str] = []  # removed at the end
WINDOW = 20.0  # seconds per line of `windows`


class Part:
    """One controller's figures."""

    def __init__(self, name: str, total: int, seconds: float, latencies: list[float]) -> None:
        self.name, self.total, self.seconds, self.latencies = name, total, seconds, latencies
        self.writes_per_item = 0.0
        self.rss_mb = 0.0

    @property
    def rate(self) -> float:
        return self.total / self.seconds

    def line(self) -> str:
        return (
            f"{self.name:9s} {self.total:6d} items in {self.seconds:7.1f}s = {self.rate:6.1f}/s; "
            f"create->done {latency_summary(self.latencies)}; "
            f"{self.writes_per_item:.2f} writes/item; controller peak RSS {self.rss_mb:.0f} MB"
        )


def job(name: str) -> dict[str, Any]:
    container = {"name": "main", "image": "registry.example.com/app:latest"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "completions": 1,
            "parallelism": 1,
            "backoffLimit": 0,
            "template": {"spec": {"restartPolicy": "Never", "containers": [container]}},
        },
    }


def job_done(body: Any) -> bool:
    conditions = (body.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Complete" and c.get("status") == "True" for c in conditions)


def controller_manager_kubeconfig() -> str:
    """The embedded plane's controller-manager credentials when they are there (next to
    its admin kubeconfig), else the configured kubeconfig."""
    configured = os.environ.get("KUBECONFIG", str(Path.home() / ".kube" / "config"))
    first = Path(configured.split(os.pathsep)[0])
    beside = first.parent / "controller-manager.kubeconfig"
    return str(beside if beside.exists() else first)


def start_job_controller(log: Path, qps: int) -> subprocess.Popen[bytes]:
    binary = ensure_binaries(stderr_progress).kube_controller_manager
    argv = [
        str(binary),
        f"--kubeconfig={controller_manager_kubeconfig()}",
        "--controllers=job-controller",
        "--use-service-account-credentials=true",
        "--leader-elect=false",
        "--secure-port=0",
        f"--kube-api-qps={qps}",
        f"--kube-api-burst={qps}",
    ]
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb"))


async def measured(
    api: KubeApi,
    idle: float,
    own: Callable[[], int],
    run: Callable[[dict[str, int]], Awaitable[tuple[float, list[float]]]],
    name: str,
    total: int,
    controller: int,
) -> Part:
    plane = {k: [pid] for k, pid in plane_pids().items()}
    meter = CpuMeter({**plane, "controller": [controller]})
    progress: dict[str, int] = {}
    before = await requests(api)
    meter.start()
    sampler = asyncio.create_task(windows(name, progress, plane, controller))
    try:
        seconds, latencies = await run(progress)
    finally:
        sampler.cancel()
    meter.stop()
    await asyncio.sleep(2)  # the last writes after "done" (Events, releases)
    delta = await requests(api) - before
    print(f"  {name} {meter.summary(total)}", flush=True)
    part = Part(name, total, seconds, latencies)
    part.writes_per_item = (writes(delta) - own() - idle * (seconds + 2)) / total
    print(f"  {name} writes by kind: {busiest_writes(delta)}", flush=True)
    reads = [(k, v) for k, v in delta.most_common() if k.split()[0] in ("GET", "LIST", "WATCH")]
    print(f"  {name} reads by kind: {', '.join(f'{k} {v}' for k, v in reads[:8])}", flush=True)
    return part


async def windows(
    name: str, progress: dict[str, int], plane: dict[str, list[int]], controller: int
) -> None:
    """Every WINDOW seconds of a drain: items created and done in it, and the API server's
    and the controller's CPU per item done in it (does a cost grow as objects pile up?)."""
    pids = {"apiserver": plane.get("kube-apiserver", []), "controller": [controller]}
    last = {"created": 0, "done": 0}
    cpu = {k: sum(cpu_seconds(p) for p in v) for k, v in pids.items()}
    rows = []
    try:
        while True:
            await asyncio.sleep(WINDOW)
            now = {k: sum(cpu_seconds(p) for p in v) for k, v in pids.items()}
            done = progress.get("done", 0) - last["done"]
            created = progress.get("created", 0) - last["created"]
            per = {k: 1000 * (now[k] - cpu[k]) / max(done, 1) for k in now}
            rows.append(f"+{created}/{done}: {per['apiserver']:.1f}/{per['controller']:.1f}")
            last, cpu = dict(progress), now
    finally:
        print(
            f"  {name} per {WINDOW:.0f}s window, created/done: apiserver/controller CPU ms "
            f"per item done: {'; '.join(rows)}",
            flush=True,
        )


async def new_namespace(api: KubeApi, prefix: str) -> str:
    namespace = f"{prefix}-{uuid.uuid4().hex[:6]}"
    await api.create(NAMESPACES.path(), {"metadata": {"name": namespace}})
    CREATED_NAMESPACES.append(namespace)
    return namespace


async def bench_jobs(
    api: KubeApi, args: argparse.Namespace, idle: float, logs: Path, namespace: str
) -> Part:
    for _ in range(300):  # Pods need the namespace's default ServiceAccount
        try:
            await api.get(SERVICEACCOUNTS.path(namespace, "default"))
            break
        except ApiError:
            await asyncio.sleep(0.1)
    controller = start_job_controller(logs / "job-controller.log", args.job_qps)
    marked: set[str] = set()
    kubelet = asyncio.create_task(stand_in_kubelet(namespace, marked))
    path = JOBS.path(namespace)
    try:
        await _common.drain(api, path, [job("warm-up")], job_done)
        warm = len(marked)
        bodies = [job(f"job-{i}") for i in range(args.items)]
        part = await measured(
            api,
            idle,
            lambda: args.items + len(marked) - warm,
            lambda progress: _common.drain(api, path, bodies, job_done, progress=progress),
            "Job",
            args.items,
            controller.pid,
        )
        part.rss_mb = peak_rss_mb(controller.pid)
        return part
    finally:
        kubelet.cancel()
        controller.terminate()
        controller.wait(10)


async def operator_warm_up(api: KubeApi, namespace: str, name: str) -> None:
    bodies = [workorder(name, "build")]
    await _common.drain(api, WORKORDERS.path(namespace), bodies, workorder_done)


async def bench_workgate(
    api: KubeApi,
    args: argparse.Namespace,
    idle: float,
    logs: Path,
    namespace: str,
    kubeconfig: Path,
) -> Part:
    operator = spawn_operator(namespace, logs / "operator.log", kubeconfig)
    marked: set[str] = set()
    shipwright = asyncio.create_task(stand_in_shipwright(namespace, marked))
    profiler = None
    try:
        await operator_warm_up(api, namespace, "warm-up")
        warm = len(marked)
        if args.profile:
            profiler = _profile.record(operator.pid, args.profile / "operator-drain.raw")
        bodies = [workorder(f"build-{i}", "build") for i in range(args.items)]
        part = await measured(
            api,
            idle,
            lambda: args.items + len(marked) - warm,
            lambda progress: _common.drain(
                api, WORKORDERS.path(namespace), bodies, workorder_done, progress=progress
            ),
            "workgate",
            args.items,
            operator.pid,
        )
        part.rss_mb = peak_rss_mb(operator.pid)
        return part
    finally:
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            profiler.wait(30)
        shipwright.cancel()
        operator.terminate()
        operator.wait(15)


def orders(parts: list[str], rounds: int) -> list[list[str]]:
    """The parts of each round, the order reversed every other round (ABBA): neither
    controller always runs first on a fresh server, or last on a warm one."""
    return [parts if r % 2 == 0 else parts[::-1] for r in range(rounds)]


async def run_part(
    api: KubeApi,
    args: argparse.Namespace,
    idle: float,
    logs: Path,
    which: str,
    *,
    catchup: bool,
    last: bool,
) -> Part:
    """One part in a namespace of its own, deleted (and waited for) unless it is the `last`;
    `catchup`: the restart catch-up follows this workgate part."""
    if which == "job":
        namespace = await new_namespace(api, "bench-jobs")
        part = await bench_jobs(api, args, idle, logs, namespace)
        print(part.line(), flush=True)
    else:
        namespace = await new_namespace(api, "bench-wg")
        async with service_account(api, namespace, "operator", logs) as kubeconfig:
            part = await bench_workgate(api, args, idle, logs, namespace, kubeconfig)
            print(part.line(), flush=True)
            if args.restart_catchup and catchup:
                await restart_catchup(
                    api, namespace, args.restart_catchup, logs, args.profile, kubeconfig
                )
    if not last:  # the next part is measured on a quiet server, not during this one's GC
        await delete_if_present(api, NAMESPACES.path(None, namespace))
        await namespace_gone(api, namespace, seconds=900)
    return part


async def main(args: argparse.Namespace, where: str) -> None:
    logs = Path(tempfile.mkdtemp(prefix="workgate-job-bench-"))
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    print(f"measuring on {where}; {args.items} items per controller", flush=True)
    parts: dict[str, list[Part]] = {"job": [], "workgate": []}
    chosen = [p for p in ("job", "workgate") if p in args.parts]
    plan = orders(chosen, args.rounds)
    async with KubeApi() as api:
        idle = await idle_rate(api)
        print(f"idle cluster: {idle:.1f} writes/s (subtracted)", flush=True)
        try:
            for number, order in enumerate(plan, 1):
                if args.rounds > 1:
                    print(f"round {number}: {', '.join(order)}", flush=True)
                for index, which in enumerate(order):
                    last = number == len(plan) and index == len(order) - 1
                    catchup = len(parts["workgate"]) == args.rounds - 1  # the last workgate part
                    part = await run_part(api, args, idle, logs, which, catchup=catchup, last=last)
                    parts[which].append(part)
        finally:
            for name in CREATED_NAMESPACES:
                await delete_if_present(api, NAMESPACES.path(None, name))
    if parts["job"] and parts["workgate"]:
        for number, (job_part, ours) in enumerate(
            zip(parts["job"], parts["workgate"], strict=True), 1
        ):
            label = f"round {number} " if args.rounds > 1 else ""
            print(
                f"{label}workgate/Job: throughput {ours.rate / job_part.rate:.2f}x, "
                f"writes per item {ours.writes_per_item / job_part.writes_per_item:.2f}x"
            )
        if args.rounds > 1:
            pooled = [
                sum(p.total for p in ps) / sum(p.seconds for p in ps) for ps in parts.values()
            ]
            print(
                f"all {args.rounds} rounds: Job {pooled[0]:.1f}/s, workgate {pooled[1]:.1f}/s, "
                f"workgate/Job {pooled[1] / pooled[0]:.2f}x"
            )
    if args.profile:
        for raw, what in (
            ("operator-drain.raw", "draining"),
            ("operator-catchup.raw", "catching up"),
        ):
            if (args.profile / raw).exists():
                print(f"operator profile while {what} (py-spy, {args.profile / raw}):")
                print(_profile.summarise(args.profile / raw))
                print(_profile.summarise_functions(args.profile / raw))
    print(f"logs: {logs}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--parts", default="job,workgate", help="job, workgate or both")
    parser.add_argument(
        "--job-qps",
        type=int,
        default=1000,
        help="the job controller's client rate limit (Kubernetes' default is 20, burst 30; "
        "workgate's client has none)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run both parts this many times, alternating which goes first (ABBA)",
    )
    parser.add_argument("--restart-catchup", type=int, default=0, metavar="PENDING")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR")
    arguments = parser.parse_args()
    if arguments.rounds < 1:
        parser.error("--rounds must be at least 1")
    with cluster() as place:
        asyncio.run(main(arguments, place))
