"""What the benches share: where to measure, the API server's request counters, watches and
drains. Not a bench itself (the processes a bench starts and measures are in _processes.py,
the stand-ins for Shipwright and the kubelet in _standins.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from workgate.cli.up import cluster_configured
from workgate.devcluster.build import cache_root, ensure_binaries, stderr_progress
from workgate.devcluster.controlplane import LocalControlPlane, default_state_dir
from workgate.devcluster.processes import read_pidfile, running_cluster
from workgate.k8s.api import NAMESPACES, ApiError, KubeApi

WRITES = {"POST", "PUT", "PATCH", "APPLY", "DELETE"}
METRIC = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+]+)$")
BUILD_YAML = (  # each WorkOrder its own Build: a name another WorkOrder controls is refused
    "apiVersion: shipwright.io/v1beta1\nkind: Build\nmetadata:\n  name: {name}\nspec:\n"
    "  source: {type: Git, git: {url: https://git.example.com/app}}\n"
    "  strategy: {name: buildah, kind: ClusterBuildStrategy}\n"
    "  output: {image: registry.example.com/app:latest}\n"
)
OnEvent = Callable[[KubeApi, str, Any], Awaitable[None]]
OWN_PLANES: list[Path] = []  # the state directories of planes `cluster()` started


@contextlib.contextmanager
def cluster() -> Iterator[str]:
    """Where to measure: the configured cluster, else `workgate dev up`'s control plane,
    else a bare embedded one started for this run and removed afterwards (so a bench runs
    from a fresh clone after `make install`)."""
    if cluster_configured():
        yield "the configured cluster"
        return
    running = running_cluster(default_state_dir())
    if running is not None:
        os.environ["KUBECONFIG"] = str(running.kubeconfig)
        yield f"the control plane of `workgate dev up` ({running.kubeconfig})"
        return
    state_dir = Path(tempfile.mkdtemp(prefix="workgate-bench-cluster-"))
    OWN_PLANES.append(state_dir)  # so plane_pids() finds its processes too
    # Bare: the bench plays Shipwright itself (it finishes BuildRuns as they appear), so
    # only the API server is measured, not kwok, Tekton or Shipwright.
    plane = LocalControlPlane(
        "bench", state_dir=state_dir, binaries=ensure_binaries(stderr_progress), bare=True
    )
    try:
        plane.start()
        os.environ["KUBECONFIG"] = str(plane.kubeconfig_path)
        yield "an embedded control plane started for this run"
    finally:
        plane.stop()
        shutil.rmtree(state_dir, ignore_errors=True)  # etcd preallocates 64 MB


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


def busiest_writes(delta: Counter[str], top: int = 8) -> str:
    busiest = [(k, v) for k, v in delta.most_common() if k.split()[0] in WRITES][:top]
    return ", ".join(f"{k} {v}" for k, v in busiest)


async def idle_rate(api: KubeApi, seconds: float = 5.0) -> float:
    """Writes per second the cluster makes on its own (leader election and the like)."""
    before = writes(await requests(api))
    await asyncio.sleep(seconds)
    return (writes(await requests(api)) - before) / seconds


async def settled(api: KubeApi, rate: float = 10.0, seconds: float = 180.0) -> float:
    """Wait until the API server serves fewer than `rate` requests a second for two seconds
    running (after a namespace is deleted, the garbage collector still reads the dependents
    of what went for a while); the seconds it took."""
    started = time.monotonic()
    before, calm = await requests(api), 0
    while calm < 2 and time.monotonic() - started < seconds:
        await asyncio.sleep(1)
        now = await requests(api)
        calm = calm + 1 if sum((now - before).values()) < rate else 0
        before = now
    return time.monotonic() - started


def plane_pids() -> dict[str, int]:
    """The processes (name -> pid) of the embedded control plane that $KUBECONFIG points
    at, if it is one: found through its pidfile (other planes may run on this machine)."""
    kubeconfig = os.environ.get("KUBECONFIG", "")
    for state_dir in [*OWN_PLANES, *(cache_root() / "clusters").glob("*")]:
        info = read_pidfile(state_dir)
        if info is not None and kubeconfig and info.kubeconfig == Path(kubeconfig):
            return dict(info.pids)
    return {}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latency_summary(seconds: list[float]) -> str:
    if not seconds:
        return "no samples"
    return (
        f"p50 {statistics.median(seconds) * 1000:.0f} ms, "
        f"p99 {percentile(seconds, 0.99) * 1000:.0f} ms"
    )


def workorder(
    name: str, work_type: str, gates: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "workType": work_type,
        "yamlContent": BUILD_YAML.replace("{name}", name) if work_type == "build" else "{}",
    }
    if gates:
        spec["gates"] = gates
    return {
        "apiVersion": "workgate.io/v1alpha1",
        "kind": "WorkOrder",
        "metadata": {"name": name},
        "spec": spec,
    }


def workorder_done(body: Any) -> bool:
    return bool((body.get("status") or {}).get("phase") == "SUCCEEDED")


async def watch_forever(
    path: str, params: dict[str, str], on_event: OnEvent, listed: asyncio.Event | None = None
) -> None:
    """Watch `path` on a client of its own, starting over (with a list) after any error;
    `listed` is set once the first list is handed over."""
    while True:
        try:
            async with KubeApi() as api:
                listing = await api.get(path, params=params)
                for body in listing.get("items", []):
                    await on_event(api, "ADDED", body)
                if listed is not None:
                    listed.set()
                version = listing["metadata"]["resourceVersion"]
                watch = {**params, "resourceVersion": version}
                async for kind, body in api.watch(path, params=watch, timeout_seconds=600):
                    await on_event(api, kind, body)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            print(f"  (watch of {path} restarted after {exc!r})", file=sys.stderr)
            await asyncio.sleep(0.2)


async def drain(
    api: KubeApi,
    path: str,
    bodies: list[dict[str, Any]],
    is_done: Callable[[Any], bool],
    params: dict[str, str] | None = None,
    concurrency: int = 16,
    progress: dict[str, int] | None = None,
) -> tuple[float, list[float]]:
    """Create `bodies` in collection `path`, `concurrency` at a time; (seconds from the first
    create until the last is done, create -> done latency of each). `progress`, if given,
    is kept at {"created": ..., "done": ...} as they go."""
    created: dict[str, float] = {}
    latencies: dict[str, float] = {}
    progress = {} if progress is None else progress
    progress.update(created=0, done=0)
    finished = asyncio.Event()

    async def on_event(_: KubeApi, kind: str, body: Any) -> None:
        name = body["metadata"]["name"]
        fresh = kind in ("ADDED", "MODIFIED") and name in created and name not in latencies
        if fresh and is_done(body):
            latencies[name] = time.monotonic() - created[name]
            progress["done"] = len(latencies)
            if len(latencies) >= len(bodies):
                finished.set()

    watcher = asyncio.create_task(watch_forever(path, params or {}, on_event))
    await asyncio.sleep(0.5)
    start = time.monotonic()
    semaphore = asyncio.Semaphore(concurrency)

    async def create(body: dict[str, Any]) -> None:
        async with semaphore:
            created[body["metadata"]["name"]] = time.monotonic()
            await api.create(path, body)
            progress["created"] += 1

    await asyncio.gather(*(create(body) for body in bodies))
    try:
        await asyncio.wait_for(finished.wait(), timeout=max(120.0, len(bodies) * 0.5))
    finally:
        watcher.cancel()
    return time.monotonic() - start, list(latencies.values())


async def wait_until(probe: Callable[[], Awaitable[Any]], what: str, seconds: float = 120) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            found = await probe()
        except ApiError as exc:
            if not exc.not_found:
                raise
            found = None
        if found:
            return found
        await asyncio.sleep(0.2)
    raise SystemExit(f"gave up after {seconds:.0f}s waiting for {what}")


async def namespace_gone(api: KubeApi, namespace: str, seconds: float = 300) -> None:
    started = time.monotonic()

    async def gone() -> bool:
        try:
            await api.get(NAMESPACES.path(None, namespace))
        except ApiError as exc:
            if exc.not_found:
                return True
            raise
        return False

    await wait_until(gone, f"namespace {namespace} deleted", seconds)
    deleted = time.monotonic() - started
    quiet = await settled(api)
    print(
        f"(namespace {namespace} deleted in {deleted:.1f}s, server quiet {quiet:.1f}s later)",
        flush=True,
    )


async def delete_if_present(api: KubeApi, path: str) -> None:
    try:
        await api.request("DELETE", path)
    except ApiError as exc:
        if not exc.not_found:
            raise
