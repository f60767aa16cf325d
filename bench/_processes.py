"""The processes a bench starts and measures: `workgate` commands, the operator and its
ServiceAccount credentials, peak memory and CPU time read from /proc."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import yaml

from workgate.k8s.api import NAMESPACES, KubeApi


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
