"""The embedded control plane's processes: ports, children that die with their parent, the
pidfile through which a detached plane is found and stopped again."""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import json
import os
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from workgate.devcluster.build import file_lock
from workgate.devcluster.pki import Pki

# Started in this order, stopped in the reverse order of these tiers.
CORE_PROCESSES = ("etcd", "kube-apiserver", "kube-controller-manager")
ADDON_PROCESSES = (
    "kube-scheduler",
    "kwok",
    "tekton-pipelines-controller",
    "shipwright-build-controller",
)
PROCESS_NAMES = CORE_PROCESSES  # the processes every running plane has


def stop_tiers(names: Iterable[str]) -> list[list[str]]:
    """Who to stop together, in order: the add-ons, then the API server and controller
    manager, then etcd last (the others would log errors while it is gone)."""
    names = list(names)
    return [
        [n for n in names if n not in CORE_PROCESSES],
        [n for n in names if n in CORE_PROCESSES and n != "etcd"],
        [n for n in names if n == "etcd"],
    ]


@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kwok: int
    tekton_probes: int
    tekton_metrics: int
    tekton_profiling: int
    shipwright_metrics: int

    @classmethod
    def allocate(cls) -> Ports:
        # Hold all sockets open until every port is chosen so they are distinct.
        with contextlib.ExitStack() as stack:
            ports = []
            for _ in fields(cls):
                sock = stack.enter_context(socket.socket())
                sock.bind(("127.0.0.1", 0))
                ports.append(sock.getsockname()[1])
        return cls(*ports)

    def all_free(self) -> bool:
        return all(port_is_free(port) for port in asdict(self).values())


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        # Go listeners set SO_REUSEADDR, so TIME_WAIT leftovers don't block them either.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


_PR_SET_PDEATHSIG = 1
_libc: ctypes.CDLL | None = (
    ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
)


def die_with_parent(parent_pid: int) -> Callable[[], None]:
    """preexec_fn: SIGKILL the child when its parent dies, even by SIGKILL.

    Linux ties this to the *thread* that forked, so start the control plane from a thread
    that lives as long as it should (normally the main thread).
    """

    def preexec() -> None:
        if _libc is not None:
            _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def pid_alive(pid: int) -> bool:
    """True for a live process; a zombie (dead, not yet reaped) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _belongs_to(pid: int, state_dir: Path) -> bool:
    """Whether `pid` is one of our processes: every one has the state dir on its command
    line, which guards against signalling a recycled pid."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return f"{state_dir}{os.sep}".encode() in cmdline


@dataclass(frozen=True)
class RunningCluster:
    """What the pidfile of a running control plane says."""

    state_dir: Path
    kubeconfig: Path
    server: str
    bin_dir: Path
    pids: dict[str, int]
    owner: int
    detached: bool
    bare: bool = False

    def alive(self) -> dict[str, int]:
        return {
            name: pid
            for name, pid in self.pids.items()
            if pid_alive(pid) and _belongs_to(pid, self.state_dir)
        }

    def export_lines(self) -> list[str]:
        return export_lines(self.kubeconfig, self.bin_dir)

    def ready(self, timeout: float = 5) -> bool:
        port = int(self.server.rsplit(":", 1)[1])
        status, _ = admin_get(Pki(self.state_dir / "pki"), port, "/readyz", timeout=timeout)
        return status == 200


def export_lines(kubeconfig_path: Path, bin_dir: Path) -> list[str]:
    """Shell lines to use the cluster with the built kubectl (for `eval`)."""
    return [
        f"export KUBECONFIG={shlex.quote(str(kubeconfig_path))}",
        f'export PATH={shlex.quote(str(bin_dir))}:"$PATH"',
    ]


def admin_get(
    pki: Pki, port: int, path: str, *, scheme: str = "https", timeout: float = 5
) -> tuple[int, str]:
    """GET from one of our loopback ports as the admin; (0, error) when it cannot connect.

    Plain http.client rather than urllib: proxy settings must not apply to loopback.
    """
    connection: http.client.HTTPConnection
    if scheme == "https":
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        context.load_cert_chain(pki.cert("admin"), pki.key("admin"))
        connection = http.client.HTTPSConnection(
            "127.0.0.1", port, context=context, timeout=timeout
        )
    else:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")[:500]
    except (OSError, http.client.HTTPException) as exc:
        return 0, str(exc)
    finally:
        connection.close()


def pidfile_path(state_dir: Path) -> Path:
    return state_dir / "pids.json"


def read_pidfile(state_dir: Path) -> RunningCluster | None:
    try:
        raw = json.loads(pidfile_path(state_dir).read_text())
        return RunningCluster(
            state_dir=state_dir,
            kubeconfig=Path(raw["kubeconfig"]),
            server=str(raw["server"]),
            bin_dir=Path(raw["bin_dir"]),
            pids={str(k): int(v) for k, v in raw["pids"].items()},
            owner=int(raw["owner"]),
            detached=bool(raw["detached"]),
            bare=bool(raw.get("bare", True)),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def running_cluster(state_dir: Path) -> RunningCluster | None:
    """The control plane running from `state_dir`, if all its processes are alive."""
    info = read_pidfile(state_dir)
    if info is None or not set(PROCESS_NAMES) <= set(info.pids):
        return None
    if set(info.alive()) != set(info.pids):
        return None
    return info


def terminate_pids(pids: Iterable[int], timeout: float = 10.0) -> list[int]:
    """SIGTERM, then SIGKILL whatever is still alive after `timeout`; returns those killed."""
    pids = [pid for pid in pids if pid_alive(pid)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(pid_alive(pid) for pid in pids):
        time.sleep(0.05)
    killed = [pid for pid in pids if pid_alive(pid)]
    for pid in killed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(pid_alive(pid) for pid in killed):
        time.sleep(0.05)
    return killed


def stop_detached(state_dir: Path, timeout: float = 10.0) -> list[str]:
    """Stop the control plane recorded in `state_dir`'s pidfile (from any process).

    Returns the names of the processes that were running.
    """
    with file_lock(state_dir / ".lock") if state_dir.is_dir() else contextlib.nullcontext():
        info = read_pidfile(state_dir)
        if info is None:
            return []
        alive = info.alive()
        for tier in stop_tiers(alive):
            terminate_pids([alive[name] for name in tier], timeout)
        pidfile_path(state_dir).unlink(missing_ok=True)
        return sorted(alive)


class Child:
    def __init__(self, name: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.name = name
        self.proc = proc
        self.log = log

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
