"""What the benches share: where to measure, the API server's request counters, the operator
process and its credentials, watches and drains. Not a bench itself (the stand-ins for
Shipwright and the kubelet are in _standins.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from workgate.cli.up import cluster_configured
from workgate.devcluster.build import cache_root, ensure_binaries, stderr_progress
from workgate.devcluster.controlplane import (
    LocalControlPlane,
    default_state_dir,
    read_pidfile,
    running_cluster,
)
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(argv: list[str], log: Path, **env: str) -> subprocess.Popen[bytes]:
    """A `workgate` command in a process of its own, stderr to `log`."""
    return subprocess.Popen(
        [sys.executable, "-m", "workgate.cli.main", *argv],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )


def spawn_operator(
    namespace: str, log: Path, kubeconfig: Path | None = None
) -> subprocess.Popen[bytes]:
    """An operator scoped to `namespace`, webhook and metrics endpoint off; `kubeconfig`:
    its credentials (else the bench's own)."""
    more = {"KUBECONFIG": str(kubeconfig)} if kubeconfig is not None else {}
    return spawn(
        ["run"],
        log,
        WORKGATE_NAMESPACES=namespace,
        WORKGATE_WEBHOOK="off",
        WORKGATE_METRICS_PORT="off",
        **more,
    )


CLUSTER_ROLE_BINDINGS = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"


def token_kubeconfig(token: str, user: str, path: Path) -> None:
    """Write a kubeconfig for the bench's cluster, as `user` with `token`."""
    ours = yaml.safe_load(Path(os.environ["KUBECONFIG"].split(os.pathsep)[0]).read_text())
    current = next(c for c in ours["contexts"] if c["name"] == ours["current-context"])
    cluster = next(c for c in ours["clusters"] if c["name"] == current["context"]["cluster"])
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": cluster["name"], "user": user}}],
        "current-context": user,
    }
    path.touch(mode=0o600)
    path.write_text(json.dumps(config))


@contextlib.asynccontextmanager
async def service_account(
    api: KubeApi, namespace: str, name: str, directory: Path
) -> AsyncIterator[Path]:
    """A kubeconfig that authenticates as a new ServiceAccount `namespace/name` (bound to
    cluster-admin while the block runs) with a TokenRequest token: how a controller in a
    cluster authenticates, the operator's pod as the Job controller
    (`--use-service-account-credentials`). The plane's admin client certificate costs the
    API server an ECDSA verification on every request (7% of its CPU in a profile of a
    `build` drain); a token is verified once, then cached."""
    accounts = f"/api/v1/namespaces/{namespace}/serviceaccounts"
    await api.create(accounts, {"metadata": {"name": name}})
    binding = f"{namespace}-{name}"
    # Owned by its namespace: a SIGKILLed bench's binding goes when the namespace does.
    uid = (await api.get(NAMESPACES.path(None, namespace)))["metadata"]["uid"]
    owner = {"apiVersion": "v1", "kind": "Namespace", "name": namespace, "uid": uid}
    await api.create(
        CLUSTER_ROLE_BINDINGS,
        {
            "metadata": {"name": binding, "ownerReferences": [owner]},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cluster-admin",
            },
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    )
    try:
        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}
        issued = await api.create(f"{accounts}/{name}/token", request)
        path = directory / f"{name}.kubeconfig"
        await asyncio.to_thread(token_kubeconfig, issued["status"]["token"], name, path)
        yield path
    finally:
        await api.request("DELETE", f"{CLUSTER_ROLE_BINDINGS}/{binding}")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """CPU time (user + system) a process has used; with `children`, also that of its
    children it has waited for (an agent's commands)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def plane_pids() -> dict[str, int]:
    """The processes (name -> pid) of the embedded control plane that $KUBECONFIG points
    at, if it is one: found through its pidfile (other planes may run on this machine)."""
    kubeconfig = os.environ.get("KUBECONFIG", "")
    for state_dir in [*OWN_PLANES, *(cache_root() / "clusters").glob("*")]:
        info = read_pidfile(state_dir)
        if info is not None and kubeconfig and info.kubeconfig == Path(kubeconfig):
            return dict(info.pids)
    return {}


class CpuMeter:
    """CPU seconds used by named processes between `start()` and `stop()`."""

    def __init__(self, pids: dict[str, list[int]], with_children: set[str] = frozenset()) -> None:
        self.pids, self.with_children = pids, with_children
        self._start: dict[str, float] = {}
        self.used: dict[str, float] = {}
        self._wall = 0.0

    def _now(self) -> dict[str, float]:
        now = {
            name: sum(cpu_seconds(pid, children=name in self.with_children) for pid in pids)
            for name, pids in self.pids.items()
        }
        own = os.times()
        now["bench"] = own.user + own.system
        return now

    def start(self) -> None:
        self._start, self._wall = self._now(), time.monotonic()

    def stop(self) -> None:
        self.used = {k: v - self._start.get(k, 0.0) for k, v in self._now().items()}
        self._wall = time.monotonic() - self._wall

    def summary(self, items: int) -> str:
        total = sum(self.used.values())
        parts = ", ".join(
            f"{name} {1000 * used / items:.1f}"
            for name, used in sorted(self.used.items(), key=lambda kv: -kv[1])
            if used > 0
        )
        cores = total / self._wall if self._wall else 0.0
        return (
            f"CPU ms per WorkOrder: {parts}; total {1000 * total / items:.1f} "
            f"({cores:.2f} of {os.cpu_count()} cores busy)"
        )


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
