"""A real, local Kubernetes control plane: etcd, kube-apiserver and kube-controller-manager as
child processes on loopback, with their own CA.

There is no kubelet, scheduler or network: objects behave as in a real cluster (admission,
RBAC, garbage collection, namespace deletion, service-account tokens) but pods never run.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import datetime
import http.client
import ipaddress
import json
import os
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from workgate.devcluster import shipwright
from workgate.devcluster.build import (
    Binaries,
    Progress,
    cache_root,
    ensure_binaries,
    file_lock,
    stderr_progress,
)

DEFAULT_NAME = "dev"
SERVICE_CIDR = "10.96.0.0/16"
# Enough for objects to behave as in a real cluster; nothing that needs nodes.
CONTROLLERS = (
    "garbagecollector",
    "namespace",
    "serviceaccount",
    "serviceaccount-token",
    "clusterrole-aggregation",
    "root-ca-cert-publisher",
    "resourcequota",
)
PROCESS_NAMES = ("etcd", "kube-apiserver", "kube-controller-manager")
REPO_CRDS_DIR = Path(__file__).resolve().parents[3] / "crds"  # only in a source checkout
PACKAGE_CRDS_DIR = Path(__file__).resolve().parents[1] / "crds"  # if shipped as package data


class ControlPlaneError(RuntimeError):
    pass


def default_state_dir(name: str = DEFAULT_NAME) -> Path:
    return cache_root() / "clusters" / name


def workgate_crd_files() -> list[Path]:
    """Workgate's own CRDs: package data when installed, else the checkout's `crds/`."""
    for directory in (PACKAGE_CRDS_DIR, REPO_CRDS_DIR):
        files = sorted(directory.glob("*.yaml"))
        if files:
            return files
    return []


def default_crd_files(progress: Progress = stderr_progress) -> list[Path]:
    return shipwright.crd_files(progress=progress) + workgate_crd_files()


# --- ports -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int

    @classmethod
    def allocate(cls) -> Ports:
        # Hold all sockets open until every port is chosen so they are distinct.
        with contextlib.ExitStack() as stack:
            ports = []
            for _ in range(4):
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


# --- PKI ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    directory: Path

    def path(self, name: str) -> Path:
        return self.directory / name

    @property
    def ca_cert(self) -> Path:
        return self.path("ca.crt")

    @property
    def ca_key(self) -> Path:
        return self.path("ca.key")

    def cert(self, name: str) -> Path:
        return self.path(f"{name}.crt")

    def key(self, name: str) -> Path:
        return self.path(f"{name}.key")

    @property
    def sa_key(self) -> Path:
        return self.path("sa.key")

    @property
    def sa_pub(self) -> Path:
        return self.path("sa.pub")

    def ensure(self, service_cidr: str = SERVICE_CIDR) -> None:
        """Generate everything once; reusing it keeps old kubeconfigs and tokens valid."""
        names = ("ca", "apiserver", "admin", "controller-manager", "controller-manager-serving")
        wanted = [self.cert(n) for n in names] + [self.key(n) for n in names]
        if all(p.exists() for p in [*wanted, self.sa_key, self.sa_pub]):
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        ca_key = _ec_key()
        ca_name = _name("workgate-dev-ca")
        ca = _certificate(ca_name, ca_name, ca_key.public_key(), ca_key, is_ca=True)
        self._write("ca", ca, ca_key)
        service_ip = ipaddress.ip_network(service_cidr)[1]  # the `kubernetes` Service's IP
        loopback: list[x509.GeneralName] = [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]
        apiserver_names: list[x509.GeneralName] = [
            *loopback,
            x509.IPAddress(service_ip),
            *(
                x509.DNSName(n)
                for n in (
                    "kubernetes",
                    "kubernetes.default",
                    "kubernetes.default.svc",
                    "kubernetes.default.svc.cluster.local",
                )
            ),
        ]
        leaves: list[tuple[str, x509.Name, list[x509.GeneralName] | None]] = [
            ("apiserver", _name("kube-apiserver"), apiserver_names),
            ("admin", _name("workgate-admin", "system:masters"), None),
            ("controller-manager", _name("system:kube-controller-manager"), None),
            ("controller-manager-serving", _name("kube-controller-manager"), loopback),
        ]
        for name, subject, sans in leaves:
            key = _ec_key()
            cert = _certificate(subject, ca_name, key.public_key(), ca_key, server_names=sans)
            self._write(name, cert, key)
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_private(self.sa_key, sa_key)
        self.sa_pub.write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def _write(self, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.cert(name).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_private(self.key(name), key)


def _ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _certificate(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    signing_key: ec.EllipticCurvePrivateKey,
    *,
    is_ca: bool = False,
    server_names: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))  # tolerate a little clock skew
        .not_valid_after(now + datetime.timedelta(days=3650))  # a dev cluster; never rotated
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if is_ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        ).add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()),
            critical=False,
        )
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server_names else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if server_names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(server_names), critical=False
            )
    return builder.sign(signing_key, hashes.SHA256())


def _write_private(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def make_kubeconfig(
    server: str, ca: Path, cert: Path, key: Path, user: str, cluster: str = "workgate-dev"
) -> dict[str, Any]:
    """A self-contained kubeconfig (certificates embedded, so it can be copied around)."""

    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster,
                "cluster": {"server": server, "certificate-authority-data": b64(ca)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)},
            }
        ],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": user}}],
        "current-context": cluster,
    }


# --- processes -----------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
_libc: ctypes.CDLL | None = (
    ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
)


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
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
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def running_cluster(state_dir: Path) -> RunningCluster | None:
    """The control plane running from `state_dir`, if all its processes are alive."""
    info = read_pidfile(state_dir)
    if info is None or set(info.alive()) != set(PROCESS_NAMES):
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
        # Controller manager and API server first: they would log errors while etcd is gone.
        first = [pid for name, pid in alive.items() if name != "etcd"]
        terminate_pids(first, timeout)
        if "etcd" in alive:
            terminate_pids([alive["etcd"]], timeout)
        pidfile_path(state_dir).unlink(missing_ok=True)
        return sorted(alive)


class _Child:
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


class LocalControlPlane:
    """etcd + kube-apiserver + kube-controller-manager on loopback, from `state_dir`.

    `die_with_parent=False` lets the processes outlive this Python process (`dev up
    --detach`); `stop_detached(state_dir)` stops them later through the pidfile.
    """

    def __init__(
        self,
        name: str = DEFAULT_NAME,
        *,
        state_dir: Path | None = None,
        binaries: Binaries | None = None,
        progress: Progress = stderr_progress,
        die_with_parent: bool = True,
        service_cidr: str = SERVICE_CIDR,
        ready_timeout: float = 180.0,
    ) -> None:
        self.name = name
        self.state_dir = (state_dir or default_state_dir(name)).resolve()
        self._binaries = binaries
        self.progress = progress
        self.die_with_parent = die_with_parent
        self.service_cidr = service_cidr
        self.ready_timeout = ready_timeout
        self.pki = Pki(self.state_dir / "pki")
        self.ports: Ports | None = None
        self._children: list[_Child] = []
        self._lock = threading.Lock()

    # --- paths and facts

    @property
    def binaries(self) -> Binaries:
        if self._binaries is None:
            self._binaries = ensure_binaries(self.progress)
        return self._binaries

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
        """Start all three processes and return once the API server is ready and the
        controller manager is running its controllers."""
        binaries = self.binaries  # build (if needed) before taking the state lock
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
                terminate_pids(stale.alive().values())
                self.pidfile.unlink(missing_ok=True)
            try:
                self._prepare()
                self._start_etcd(binaries)
                self._start_apiserver(binaries, started)
                self._start_controller_manager(binaries)
            except BaseException:
                self._stop_children(timeout=5)
                self.pidfile.unlink(missing_ok=True)
                raise
        self.progress(f"control plane ready in {time.monotonic() - started:.1f}s at {self.server}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM everything (SIGKILL after `timeout`) and forget the pidfile."""
        with self._lock:
            if not self._children:
                return
            self._stop_children(timeout)
            self.pidfile.unlink(missing_ok=True)

    def _stop_children(self, timeout: float) -> None:
        children, self._children = self._children, []
        for group in (
            [c for c in children if c.name != "etcd"],
            [c for c in children if c.name == "etcd"],
        ):
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
        self._write_yaml(
            self.kubeconfig_path,
            make_kubeconfig(
                self.server, pki.ca_cert, pki.cert("admin"), pki.key("admin"), "workgate-admin"
            ),
        )
        self._write_yaml(
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
    def _write_yaml(path: Path, data: dict[str, Any]) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            yaml.safe_dump(data, handle, sort_keys=False)

    def _spawn(self, name: str, argv: Sequence[str]) -> _Child:
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
                preexec_fn=_die_with_parent(os.getpid()) if self.die_with_parent else None,
                env={k: v for k, v in os.environ.items() if k != "KUBECONFIG"},
            )
        child = _Child(name, proc, log)
        self._children.append(child)
        self._write_pidfile()
        return child

    def _write_pidfile(self) -> None:
        data = {
            "owner": os.getpid(),
            "detached": not self.die_with_parent,
            "server": self.server,
            "kubeconfig": str(self.kubeconfig_path),
            "bin_dir": str(self.binaries.bin_dir),
            "pids": self.pids,
        }
        tmp = self.pidfile.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self.pidfile)

    def _start_etcd(self, binaries: Binaries) -> None:
        assert self.ports is not None
        client = f"http://127.0.0.1:{self.ports.etcd_client}"
        peer = f"http://127.0.0.1:{self.ports.etcd_peer}"
        child = self._spawn(
            "etcd",
            [
                str(binaries.etcd),
                "--name=workgate",
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=workgate={peer}",
                # A throwaway dev/test cluster: fsync costs seconds per test run, and
                # losing the last writes on a power cut is acceptable here.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self._wait(child, "http", self.ports.etcd_client, "/health", timeout=30)

    def _start_apiserver(self, binaries: Binaries, started: float) -> None:
        assert self.ports is not None
        pki = self.pki
        t0 = time.monotonic()
        child = self._spawn(
            "kube-apiserver",
            [
                str(binaries.kube_apiserver),
                f"--etcd-servers=http://127.0.0.1:{self.ports.etcd_client}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.ports.apiserver}",
                f"--cert-dir={self.state_dir / 'apiserver'}",
                f"--tls-cert-file={pki.cert('apiserver')}",
                f"--tls-private-key-file={pki.key('apiserver')}",
                f"--client-ca-file={pki.ca_cert}",
                "--authorization-mode=Node,RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                f"--service-cluster-ip-range={self.service_cidr}",
                "--allow-privileged=true",
                # The `kubernetes` Service cannot point at loopback (validation refuses it),
                # and nothing in this cluster would route to it anyway.
                "--endpoint-reconciler-type=none",
                "--profiling=false",
            ],
        )
        self._wait(child, "https", self.ports.apiserver, "/readyz", timeout=self.ready_timeout)
        now = time.monotonic()
        self.progress(f"kube-apiserver ready in {now - t0:.1f}s ({now - started:.1f}s since start)")

    def _start_controller_manager(self, binaries: Binaries) -> None:
        assert self.ports is not None
        pki = self.pki
        config = self.state_dir / "controller-manager.kubeconfig"
        t0 = time.monotonic()
        child = self._spawn(
            "kube-controller-manager",
            [
                str(binaries.kube_controller_manager),
                f"--kubeconfig={config}",
                f"--authentication-kubeconfig={config}",
                f"--authorization-kubeconfig={config}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports.controller_manager}",
                f"--cert-dir={self.state_dir / 'controller-manager'}",
                f"--tls-cert-file={pki.cert('controller-manager-serving')}",
                f"--tls-private-key-file={pki.key('controller-manager-serving')}",
                f"--client-ca-file={pki.ca_cert}",
                # No front proxy here: don't poll for its (absent) request-header CA.
                "--authentication-skip-lookup=true",
                f"--controllers={','.join(CONTROLLERS)}",
                "--use-service-account-credentials=true",
                f"--root-ca-file={pki.ca_cert}",
                f"--service-account-private-key-file={pki.sa_key}",
                f"--service-cluster-ip-range={self.service_cidr}",
                "--cluster-name=workgate-dev",
                # One instance: an old lease left by a killed run would stall startup ~15 s.
                "--leader-elect=false",
                "--profiling=false",
            ],
        )
        self._wait(child, "https", self.ports.controller_manager, "/healthz", timeout=60)
        # Controllers run once the serviceaccount controller has created this.
        self._wait(
            child,
            "https",
            self.ports.apiserver,
            "/api/v1/namespaces/default/serviceaccounts/default",
            timeout=60,
        )
        self.progress(f"kube-controller-manager running in {time.monotonic() - t0:.1f}s")

    def _wait(self, child: _Child, scheme: str, port: int, path: str, timeout: float) -> None:
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


def run_kubectl(
    kubectl: Path,
    kubeconfig_path: Path,
    *args: str,
    check: bool = True,
    input: str | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(kubectl), *args],
        env={**os.environ, "KUBECONFIG": str(kubeconfig_path)},
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise ControlPlaneError(
            f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}"
        )
    return result


def install_crds(
    paths: Iterable[Path], *, kubectl: Path, kubeconfig: Path, timeout: float = 60
) -> None:
    """Server-side apply CRD files and wait until the API server serves them."""
    files: list[str] = []
    for path in paths:
        files += ["-f", str(path)]
    if not files:
        return
    run_kubectl(
        kubectl,
        kubeconfig,
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=workgate-dev",
        *files,
    )
    run_kubectl(
        kubectl,
        kubeconfig,
        "wait",
        "--for=condition=Established",
        f"--timeout={timeout:.0f}s",
        *files,
        timeout=timeout + 30,
    )
