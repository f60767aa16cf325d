"""Starting the add-ons of the embedded control plane: kube-scheduler, kwok with a simulated
node, the Tekton Pipelines controller and the Shipwright Build controller.

All run with the admin kubeconfig (a dev plane; their RBAC is not what is being tested) and
listen on loopback ports of their own, so several planes share one machine.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from workgate.devcluster import core, kwok, shipwright, tekton
from workgate.devcluster.components import AddonBinaries
from workgate.devcluster.kubectl import ControlPlaneError, apply_manifests
from workgate.devcluster.processes import Child

if TYPE_CHECKING:
    from workgate.devcluster.controlplane import LocalControlPlane

NODE_NAME = "workgate-node-0"
NOT_READY_TAINT = "node.kubernetes.io/not-ready"


def start_all(plane: LocalControlPlane, binaries: AddonBinaries) -> None:
    """Apply what the controllers need, start all four, then wait for each."""
    assert plane.ports is not None
    ports = plane.ports
    t0 = time.monotonic()
    kubeconfig = plane.kubeconfig_path
    kwok_config = plane.state_dir / "kwok.yaml"
    plane.write_private_yaml(kwok_config, kwok.stages())
    apply_manifests(
        [*tekton.config_manifests(), kwok.node(NODE_NAME), *shipwright.sample_strategies()],
        kubectl=plane.binaries.kubectl,
        kubeconfig=kubeconfig,
    )

    scheduler = plane.spawn(
        "kube-scheduler",
        [
            str(binaries.kube_scheduler),
            f"--kubeconfig={kubeconfig}",
            *core.serving_flags(plane, kubeconfig, ports.scheduler, "scheduler"),
            "--leader-elect=false",
            "--profiling=false",
        ],
    )
    kwok_child = plane.spawn(
        "kwok",
        [
            str(binaries.kwok),
            *kwok.args(kubeconfig, kwok_config, f"127.0.0.1:{ports.kwok}"),
        ],
    )
    tekton_child = plane.spawn(
        "tekton-pipelines-controller",
        [
            str(binaries.tekton_controller),
            f"-kubeconfig={kubeconfig}",
            # One instance: no leader election, so a lease left by a killed run can't stall it.
            "-disable-ha",
            *tekton.controller_args(),
        ],
        env={
            **tekton.controller_env(),
            "PROBES_PORT": str(ports.tekton_probes),
            "METRICS_PROMETHEUS_HOST": "127.0.0.1",
            "METRICS_PROMETHEUS_PORT": str(ports.tekton_metrics),
            "PROFILING_PORT": str(ports.tekton_profiling),
        },
    )
    shipwright_args = [
        str(binaries.shipwright_controller),
        f"--kubeconfig={kubeconfig}",
        f"--metrics-bind-address=127.0.0.1:{ports.shipwright_metrics}",
    ]
    if plane.shipwright_namespaces:
        shipwright_args.append(f"--namespaces={','.join(plane.shipwright_namespaces)}")
    shipwright_child = plane.spawn(
        "shipwright-build-controller", shipwright_args, env=shipwright.controller_env()
    )

    plane.wait_http(scheduler, "https", ports.scheduler, "/healthz", timeout=60)
    _ready(plane, "kube-scheduler", t0)
    _wait_node_schedulable(plane, kwok_child, NODE_NAME, timeout=90)
    _ready(plane, f"kwok (node {NODE_NAME} Ready, schedulable)", t0)
    plane.wait_http(tekton_child, "http", ports.tekton_probes, "/readiness", timeout=60)
    _ready(plane, f"tekton-pipelines-controller {tekton.VERSION}", t0)
    plane.wait_http(shipwright_child, "http", ports.shipwright_metrics, "/metrics", timeout=60)
    _ready(plane, f"shipwright-build-controller {shipwright.VERSION}", t0)


def _ready(plane: LocalControlPlane, what: str, t0: float) -> None:
    plane.progress(f"{what} ready {time.monotonic() - t0:.1f}s after the add-ons started")


def node_problems(node: dict[str, Any]) -> list[str]:
    """Why the scheduler would not place a Pod on `node` (empty: it would)."""
    status = node.get("status") or {}
    ready = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    problems = []
    if not ready or ready[0].get("status") != "True":
        problems.append("not Ready")
    taints = [t.get("key") for t in (node.get("spec") or {}).get("taints") or []]
    problems += [f"tainted {key}" for key in taints]
    return problems


def _wait_node_schedulable(
    plane: LocalControlPlane, child: Child, name: str, timeout: float
) -> None:
    """kwok's node-initialize stage makes the node Ready; the node lifecycle controller then
    lifts the not-ready taint the API server gave it on creation."""
    deadline = time.monotonic() + timeout
    problems = ["not seen yet"]
    while True:
        if child.proc.poll() is not None:
            raise ControlPlaneError(
                f"kwok exited with {child.proc.returncode}; log {child.log}:\n" + child.log_tail()
            )
        got = plane.kubectl("get", "node", name, "-o", "json", check=False)
        if got.returncode == 0:
            problems = node_problems(json.loads(got.stdout))
            if not problems:
                return
        if time.monotonic() > deadline:
            raise ControlPlaneError(
                f"node {name} not schedulable after {timeout:.0f}s ({', '.join(problems)}); "
                f"kwok log {child.log}:\n" + child.log_tail()
            )
        time.sleep(0.25)
