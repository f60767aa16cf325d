"""The control plane proper: etcd, kube-apiserver and kube-controller-manager, each started as
a child of a `LocalControlPlane` and waited for."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from workgate.devcluster.build import Binaries
from workgate.devcluster.processes import Child

if TYPE_CHECKING:
    from workgate.devcluster.controlplane import LocalControlPlane

# Enough for objects to behave as in a real cluster; nodelifecycle lifts the not-ready taint
# the API server puts on a new node once kwok reports it Ready.
CONTROLLERS = (
    "garbagecollector",
    "namespace",
    "serviceaccount",
    "serviceaccount-token",
    "clusterrole-aggregation",
    "root-ca-cert-publisher",
    "resourcequota",
    "nodelifecycle",
)


def start_etcd(plane: LocalControlPlane, binaries: Binaries) -> None:
    assert plane.ports is not None
    client = f"http://127.0.0.1:{plane.ports.etcd_client}"
    peer = f"http://127.0.0.1:{plane.ports.etcd_peer}"
    child = plane.spawn(
        "etcd",
        [
            str(binaries.etcd),
            "--name=workgate",
            f"--data-dir={plane.state_dir / 'etcd'}",
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
    plane.wait_http(child, "http", plane.ports.etcd_client, "/health", timeout=30)


def start_apiserver(plane: LocalControlPlane, binaries: Binaries, started: float) -> None:
    assert plane.ports is not None
    t0 = time.monotonic()
    child = spawn_apiserver(plane, binaries)
    plane.wait_http(child, "https", plane.ports.apiserver, "/readyz", timeout=plane.ready_timeout)
    now = time.monotonic()
    plane.progress(f"kube-apiserver ready in {now - t0:.1f}s ({now - started:.1f}s since start)")


def spawn_apiserver(plane: LocalControlPlane, binaries: Binaries) -> Child:
    """Start kube-apiserver on the plane's port and etcd, without waiting for it (a restart
    keeps both, so clients find it where it was and every object is still there)."""
    assert plane.ports is not None
    pki = plane.pki
    return plane.spawn(
        "kube-apiserver",
        [
            str(binaries.kube_apiserver),
            f"--etcd-servers=http://127.0.0.1:{plane.ports.etcd_client}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={plane.ports.apiserver}",
            f"--cert-dir={plane.state_dir / 'apiserver'}",
            f"--tls-cert-file={pki.cert('apiserver')}",
            f"--tls-private-key-file={pki.key('apiserver')}",
            f"--client-ca-file={pki.ca_cert}",
            "--authorization-mode=Node,RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            f"--service-cluster-ip-range={plane.service_cidr}",
            "--allow-privileged=true",
            # The `kubernetes` Service cannot point at loopback (validation refuses it),
            # and nothing in this cluster would route to it anyway.
            "--endpoint-reconciler-type=none",
            "--profiling=false",
            *plane.apiserver_args,
        ],
    )


def start_controller_manager(plane: LocalControlPlane, binaries: Binaries) -> None:
    assert plane.ports is not None
    config = plane.state_dir / "controller-manager.kubeconfig"
    t0 = time.monotonic()
    child = plane.spawn(
        "kube-controller-manager",
        [
            str(binaries.kube_controller_manager),
            f"--kubeconfig={config}",
            *serving_flags(plane, config, plane.ports.controller_manager, "controller-manager"),
            f"--controllers={','.join(CONTROLLERS)}",
            "--use-service-account-credentials=true",
            f"--root-ca-file={plane.pki.ca_cert}",
            f"--service-account-private-key-file={plane.pki.sa_key}",
            f"--service-cluster-ip-range={plane.service_cidr}",
            "--cluster-name=workgate-dev",
            # One instance: an old lease left by a killed run would stall startup ~15 s.
            "--leader-elect=false",
            "--profiling=false",
        ],
    )
    plane.wait_http(child, "https", plane.ports.controller_manager, "/healthz", timeout=60)
    # Controllers run once the serviceaccount controller has created this.
    plane.wait_http(
        child,
        "https",
        plane.ports.apiserver,
        "/api/v1/namespaces/default/serviceaccounts/default",
        timeout=60,
    )
    plane.progress(f"kube-controller-manager running in {time.monotonic() - t0:.1f}s")


def serving_flags(
    plane: LocalControlPlane, kubeconfig: Path, port: int, cert_dir: str
) -> list[str]:
    """Flags of a Kubernetes component serving HTTPS on loopback with our CA's
    certificate, authenticating clients against our CA."""
    pki = plane.pki
    return [
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--cert-dir={plane.state_dir / cert_dir}",
        f"--tls-cert-file={pki.cert('controller-manager-serving')}",
        f"--tls-private-key-file={pki.key('controller-manager-serving')}",
        f"--client-ca-file={pki.ca_cert}",
        # No front proxy here: don't poll for its (absent) request-header CA.
        "--authentication-skip-lookup=true",
    ]
