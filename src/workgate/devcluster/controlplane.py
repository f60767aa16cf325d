"""A real, local Kubernetes control plane: etcd, kube-apiserver and kube-controller-manager as
child processes on loopback, with their own CA, and (unless bare) kube-scheduler, kwok with a
simulated node, the Tekton Pipelines controller and the Shipwright Build controller.

Objects behave as in a real cluster (admission, RBAC, garbage collection, namespace deletion,
service-account tokens); with the add-ons, a BuildRun runs for real up to its Pod, which kwok
"runs" on the simulated node (no kubelet, no containers, no images pulled).

`bare=True`, or `WORKGATE_DEV_BARE=1` in the environment, starts the control plane alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from workgate.devcluster import addons, core, tekton
from workgate.devcluster.build import (
    Binaries,
    Progress,
    cache_root,
    ensure_binaries,
    file_lock,
    stderr_progress,
)
from workgate.devcluster.components import AddonBinaries, ensure_addons
from workgate.devcluster.kubectl import (
    ControlPlaneError,
    default_crd_files,
    install_crds,
    run_kubectl,
)
from workgate.devcluster.pki import SERVICE_CIDR, Pki, make_kubeconfig
from workgate.devcluster.processes import (
    Child,
    Ports,
    admin_get,
    die_with_parent,
    export_lines,
    pidfile_path,
    read_pidfile,
    running_cluster,
    stop_tiers,
    terminate_pids,
)

__all__ = ["BARE_ENV", "DEFAULT_NAME", "LocalControlPlane", "bare_from_env", "default_state_dir"]

DEFAULT_NAME = "dev"
BARE_ENV = "WORKGATE_DEV_BARE"


def default_state_dir(name: str = DEFAULT_NAME) -> Path:
    return cache_root() / "clusters" / name


def bare_from_env(env: Mapping[str, str] | None = None) -> bool:
    value = (os.environ if env is None else env).get(BARE_ENV, "").strip().lower()
    return value in {"1", "true", "yes", "on"}


class LocalControlPlane:
    """The control plane (and add-ons) on loopback, from `state_dir`.

    `die_with_parent=False` lets the processes outlive this Python process (`dev up
    --detach`); `stop_detached(state_dir)` stops them later through the pidfile.
    `shipwright_namespaces` limits the Shipwright controller to those namespaces (default:
    all), so tests elsewhere can play the controller themselves. `apiserver_args` are added
    to kube-apiserver's (a later flag wins: `--profiling=true`, `--watch-cache=false`).
    """

    def __init__(
        self,
        name: str = DEFAULT_NAME,
        *,
        state_dir: Path | None = None,
        binaries: Binaries | None = None,
        addon_binaries: AddonBinaries | None = None,
        progress: Progress = stderr_progress,
        die_with_parent: bool = True,
        service_cidr: str = SERVICE_CIDR,
        ready_timeout: float = 180.0,
        bare: bool | None = None,
        shipwright_namespaces: Sequence[str] = (),
        apiserver_args: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.state_dir = (state_dir or default_state_dir(name)).resolve()
        self._binaries = binaries
        self._addon_binaries = addon_binaries
        self.progress = progress
        self.die_with_parent = die_with_parent
        self.service_cidr = service_cidr
        self.ready_timeout = ready_timeout
        self.bare = bare_from_env() if bare is None else bare
        self.shipwright_namespaces = tuple(shipwright_namespaces)
        self.apiserver_args = tuple(apiserver_args)
        self.pki = Pki(self.state_dir / "pki")
        self.ports: Ports | None = None
        self._children: list[Child] = []
        self._lock = threading.Lock()

    # --- paths and facts

    @property
    def binaries(self) -> Binaries:
        if self._binaries is None:
            self._binaries = ensure_binaries(self.progress)
        return self._binaries

    @property
    def addon_binaries(self) -> AddonBinaries:
        if self._addon_binaries is None:
            self._addon_binaries = ensure_addons(self.progress)
        return self._addon_binaries

    @property
    def kubeconfig_path(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def pidfile(self) -> Path:
        return pidfile_path(self.state_dir)

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def server(self) -> str:
        if self.ports is None:
            raise ControlPlaneError("the control plane has not been started")
        return f"https://127.0.0.1:{self.ports.apiserver}"

    @property
    def pids(self) -> dict[str, int]:
        return {child.name: child.proc.pid for child in self._children}

    def export_lines(self) -> list[str]:
        return export_lines(self.kubeconfig_path, self.binaries.bin_dir)

    def exited(self) -> list[str]:
        """Names of started processes that have exited since."""
        return [child.name for child in self._children if child.proc.poll() is not None]

    def crd_files(self) -> list[Path]:
        """What this plane serves: Shipwright's and workgate's CRDs, and Tekton's unless bare."""
        files = default_crd_files(self.progress)
        return files if self.bare else files + tekton.crd_files(progress=self.progress)

    # --- lifecycle

    def __enter__(self) -> LocalControlPlane:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start everything, CRDs installed, and return once it all answers."""
        binaries = self.binaries  # build (if needed) before taking the state lock
        addon_binaries = None if self.bare else self.addon_binaries
        crds = self.crd_files()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with file_lock(self.state_dir / ".lock"):
            if running_cluster(self.state_dir) is not None:
                raise ControlPlaneError(
                    f"a control plane is already running from {self.state_dir}"
                    " (stop it with `workgate dev down`)"
                )
            stale = read_pidfile(self.state_dir)
            if stale is not None:  # e.g. one process crashed: clear out the rest
                alive = stale.alive()
                for tier in stop_tiers(alive):
                    terminate_pids([alive[name] for name in tier])
                self.pidfile.unlink(missing_ok=True)
            try:
                self._prepare()
                core.start_etcd(self, binaries)
                core.start_apiserver(self, binaries, started)
                core.start_controller_manager(self, binaries)
                t0 = time.monotonic()
                self.install_crds(crds)
                self.progress(f"{len(crds)} CRDs established in {time.monotonic() - t0:.1f}s")
                if addon_binaries is not None:
                    addons.start_all(self, addon_binaries)
            except BaseException:
                self._stop_children(timeout=5)
                self.pidfile.unlink(missing_ok=True)
                raise
        what = "bare control plane" if self.bare else "control plane with add-ons"
        self.progress(f"{what} ready in {time.monotonic() - started:.1f}s at {self.server}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM everything (SIGKILL after `timeout`) and forget the pidfile."""
        with self._lock:
            if not self._children:
                return
            self._stop_children(timeout)
            self.pidfile.unlink(missing_ok=True)

    def _stop_children(self, timeout: float) -> None:
        children, self._children = self._children, []
        by_name = {child.name: child for child in children}
        for tier in stop_tiers(by_name):
            group = [by_name[name] for name in tier]
            for child in group:
                if child.proc.poll() is None:
                    child.proc.terminate()
            deadline = time.monotonic() + timeout
            for child in group:
                try:
                    child.proc.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self.progress(f"{child.name} did not stop in {timeout:.0f}s; killing it")
                    child.proc.kill()
                    child.proc.wait()

    def _prepare(self) -> None:
        self.pki.ensure(self.service_cidr)
        self.log_dir.mkdir(exist_ok=True)
        self.ports = self._choose_ports()
        pki = self.pki
        self.write_private_yaml(
            self.kubeconfig_path,
            make_kubeconfig(
                self.server, pki.ca_cert, pki.cert("admin"), pki.key("admin"), "workgate-admin"
            ),
        )
        self.write_private_yaml(
            self.state_dir / "controller-manager.kubeconfig",
            make_kubeconfig(
                self.server,
                pki.ca_cert,
                pki.cert("controller-manager"),
                pki.key("controller-manager"),
                "system:kube-controller-manager",
            ),
        )

    def _choose_ports(self) -> Ports:
        """Reuse the last ports when free, so a restarted cluster keeps its address."""
        path = self.state_dir / "ports.json"
        with contextlib.suppress(OSError, ValueError, TypeError):
            previous = Ports(**json.loads(path.read_text()))
            if previous.all_free():
                return previous
        ports = Ports.allocate()
        path.write_text(json.dumps(asdict(ports)))
        return ports

    @staticmethod
    def write_private_yaml(path: Path, data: dict[str, Any] | list[Any]) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            if isinstance(data, list):
                yaml.safe_dump_all(data, handle, sort_keys=False)
            else:
                yaml.safe_dump(data, handle, sort_keys=False)

    def spawn(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> Child:
        """Start a child process logging to `logs/<name>.log`; it dies with us unless detached.

        Every child must have the state dir on its command line (see `processes`)."""
        log = self.log_dir / f"{name}.log"
        with log.open("ab") as handle:
            handle.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(argv)}\n".encode())
            handle.flush()
            proc = subprocess.Popen(
                list(argv),
                cwd=self.state_dir,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                # Own session: a terminal's Ctrl-C reaches only us, and we stop them in order.
                start_new_session=True,
                preexec_fn=die_with_parent(os.getpid()) if self.die_with_parent else None,
                env={**{k: v for k, v in os.environ.items() if k != "KUBECONFIG"}, **(env or {})},
            )
        child = Child(name, proc, log)
        self._children.append(child)
        self._write_pidfile()
        return child

    def _write_pidfile(self) -> None:
        data = {
            "owner": os.getpid(),
            "detached": not self.die_with_parent,
            "bare": self.bare,
            "server": self.server,
            "kubeconfig": str(self.kubeconfig_path),
            "bin_dir": str(self.binaries.bin_dir),
            "pids": self.pids,
        }
        tmp = self.pidfile.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self.pidfile)

    def wait_http(self, child: Child, scheme: str, port: int, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            if child.proc.poll() is not None:
                raise ControlPlaneError(
                    f"{child.name} exited with {child.proc.returncode}; log {child.log}:\n"
                    + child.log_tail()
                )
            status, last = self.get(path, scheme=scheme, port=port)
            if status == 200:
                return
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"{child.name}: {path} not ready after {timeout:.0f}s (last: {last}); "
                    f"log {child.log}:\n" + child.log_tail()
                )
            time.sleep(0.1)

    def get(
        self, path: str, *, scheme: str = "https", port: int | None = None, timeout: float = 5
    ) -> tuple[int, str]:
        """GET from the API server (or another of our ports) as the admin."""
        if port is None:
            if self.ports is None:
                raise ControlPlaneError("the control plane has not been started")
            port = self.ports.apiserver
        return admin_get(self.pki, port, path, scheme=scheme, timeout=timeout)

    def kill_apiserver(self) -> None:
        """SIGKILL kube-apiserver alone (a crash); etcd and its data stay."""
        with self._lock:
            [child] = [c for c in self._children if c.name == "kube-apiserver"]
            child.proc.kill()
            child.proc.wait()
            self._children.remove(child)
            self._write_pidfile()

    def restart_apiserver(self) -> Child:
        """Start kube-apiserver again after `kill_apiserver`, on the same port and etcd data;
        returns at once (wait with `wait_apiserver`). Call it from the thread that started
        the plane: the process dies with that thread (see `processes.die_with_parent`)."""
        with self._lock:
            return core.spawn_apiserver(self, self.binaries)

    def wait_apiserver(self, child: Child, timeout: float = 120.0) -> None:
        assert self.ports is not None
        self.wait_http(child, "https", self.ports.apiserver, "/readyz", timeout=timeout)

    # --- using it

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return run_kubectl(
            self.binaries.kubectl,
            self.kubeconfig_path,
            *args,
            check=check,
            input=input,
            timeout=timeout,
        )

    def install_crds(self, paths: Iterable[Path], timeout: float = 60) -> None:
        install_crds(
            paths, kubectl=self.binaries.kubectl, kubeconfig=self.kubeconfig_path, timeout=timeout
        )
