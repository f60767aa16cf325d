"""The embedded control plane behaves like a real cluster, and leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cluster
from workgate.devcluster.build import pinned_versions
from workgate.devcluster.kubectl import workgate_crd_files
from workgate.devcluster.processes import (
    ADDON_PROCESSES,
    CORE_PROCESSES,
    Ports,
    pid_alive,
    pidfile_path,
    port_is_free,
    read_pidfile,
)

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def eventually(probe: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.25)


def test_readyz(kubectl: Kubectl) -> None:
    assert kubectl("get", "--raw=/readyz").stdout.strip() == "ok"


def test_kubectl_is_the_pinned_kubernetes_and_so_is_the_embedded_server(
    kubectl: Kubectl, cluster: Cluster
) -> None:
    versions = json.loads(kubectl("version", "-o", "json").stdout)
    expected = pinned_versions().kubernetes
    assert versions["clientVersion"]["gitVersion"] == expected
    if cluster.embedded:  # another cluster runs whatever version it runs
        assert versions["serverVersion"]["gitVersion"] == expected


def test_owned_configmap_is_garbage_collected(kubectl: Kubectl, namespace: str) -> None:
    kubectl("create", "configmap", "owner", "-n", namespace, "--from-literal=a=1")
    uid = kubectl("get", "configmap", "owner", "-n", namespace, "-o", "jsonpath={.metadata.uid}")
    dependent = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "dependent",
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid.stdout}
            ],
        },
        "data": {"b": "2"},
    }
    kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(dependent))
    kubectl("delete", "configmap", "owner", "-n", namespace)

    def collected() -> bool:
        got = kubectl("get", "configmap", "dependent", "-n", namespace, check=False)
        return got.returncode != 0 and "NotFound" in got.stderr

    eventually(collected, 60, "the dependent ConfigMap to be garbage-collected")


def test_namespace_deletion_completes(kubectl: Kubectl) -> None:
    name = f"doomed-{os.getpid()}"
    kubectl("create", "namespace", name)
    kubectl("create", "configmap", "content", "-n", name)
    kubectl("create", "-n", name, "-f", "-", input=json.dumps(_build("inside")))
    # Blocks until the namespace controller has emptied it, custom resources included.
    kubectl("delete", "namespace", name, "--timeout=90s", timeout=120)
    gone = kubectl("get", "namespace", name, check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr


def _build(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "shipwright.io/v1beta1",
        "kind": "Build",
        "metadata": {"name": name},
        "spec": {
            "source": {"type": "Git", "git": {"url": "https://git.example.com/team/app"}},
            "strategy": {"name": "buildah", "kind": "ClusterBuildStrategy"},
            "output": {"image": "registry.example.com/team/app:latest"},
        },
    }


def test_shipwright_serves_v1beta1_builds_and_buildruns(kubectl: Kubectl, namespace: str) -> None:
    group = json.loads(kubectl("get", "--raw=/apis/shipwright.io").stdout)
    assert [v["version"] for v in group["versions"]] == ["v1beta1"]
    build_run = {
        "apiVersion": "shipwright.io/v1beta1",
        "kind": "BuildRun",
        "metadata": {"name": "app-1"},
        "spec": {"build": {"name": "app"}},
    }
    for body in (_build("app"), build_run):
        kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(body))
    for kind, name in (("builds.shipwright.io", "app"), ("buildruns.shipwright.io", "app-1")):
        got = json.loads(kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout)
        assert got["apiVersion"] == "shipwright.io/v1beta1"
    assert (
        json.loads(kubectl("get", "build", "app", "-n", namespace, "-o", "json").stdout)["spec"][
            "output"
        ]["image"]
        == "registry.example.com/team/app:latest"
    )


def test_workgate_crds_are_established(kubectl: Kubectl) -> None:
    files = workgate_crd_files()
    assert [p.name for p in files] == sorted(p.name for p in (REPO / "crds").glob("*.yaml"))
    for path in files:
        kubectl("wait", "--for=condition=Established", "--timeout=5s", "-f", str(path))


@pytest.mark.real_build
def test_the_simulated_node_takes_a_pod_to_completion(
    kubectl: Kubectl, real_builds: None, namespace: str
) -> None:
    """The scheduler places a Pod on kwok's node, and kwok runs it (Jobs' Pods complete)."""
    kubectl("create", "job", "once", "-n", namespace, "--image=registry.invalid/never-pulled:1")
    job_uid = kubectl(
        "get", "job", "once", "-n", namespace, "-o", "jsonpath={.metadata.uid}"
    ).stdout
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "once-0",
            "ownerReferences": [
                {"apiVersion": "batch/v1", "kind": "Job", "name": "once", "uid": job_uid}
            ],
        },
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "c", "image": "registry.invalid/never-pulled:1"}],
        },
    }
    kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(pod))
    kubectl(
        "wait", "-n", namespace, "pod/once-0", "--for=jsonpath={.status.phase}=Succeeded",
        "--timeout=60s", timeout=90,
    )  # fmt: skip
    node = kubectl("get", "pod", "once-0", "-n", namespace, "-o", "jsonpath={.spec.nodeName}")
    annotations = json.loads(
        kubectl("get", "node", node.stdout, "-o", "jsonpath={.metadata.annotations}").stdout
    )
    assert annotations["kwok.x-k8s.io/node"] == "fake"


# --- process hygiene: a second, private control plane per test ----------------------------

START_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from workgate.devcluster.controlplane import LocalControlPlane

    plane = LocalControlPlane(
        "hygiene", state_dir=Path(sys.argv[1]), progress=lambda _: None, bare=sys.argv[2] == "bare"
    )
    plane.start()
    print("ready", flush=True)
    time.sleep(600)
    """
)


def _children_of(state_dir: Path, bare: bool) -> tuple[dict[str, int], Ports]:
    info = read_pidfile(state_dir)
    assert info is not None, "no pidfile"
    expected = CORE_PROCESSES if bare else CORE_PROCESSES + ADDON_PROCESSES
    assert sorted(info.alive()) == sorted(expected)
    assert info.bare == bare
    ports = Ports(**json.loads((state_dir / "ports.json").read_text()))
    return info.pids, ports


def _assert_all_gone(pids: dict[str, int], ports: Ports, timeout: float = 10) -> None:
    eventually(
        lambda: not any(pid_alive(pid) for pid in pids.values()),
        timeout,
        f"{pids} to exit",
    )
    eventually(
        lambda: all(port_is_free(port) for port in vars(ports).values()),
        timeout,
        f"{ports} to be released",
    )


def test_sigkilled_parent_takes_its_control_plane_with_it(tmp_path: Path, cluster: Cluster) -> None:
    """With the add-ons, unless the session runs bare (then they may not even be built)."""
    bare = cluster.bare or not cluster.embedded
    parent = subprocess.Popen(
        [sys.executable, "-c", START_SCRIPT, str(tmp_path), "bare" if bare else "full"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()  # blocks until started (or the parent died)
        assert line.strip() == "ready", parent.stderr.read() if parent.stderr else ""
        pids, ports = _children_of(tmp_path, bare)
        parent.send_signal(signal.SIGKILL)  # no finally, no atexit: only the kernel helps
        parent.wait(10)
        _assert_all_gone(pids, ports, timeout=5)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def _workgate(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workgate.cli.main", "dev", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_dev_up_bare_detached_then_down_leaves_nothing(tmp_path: Path) -> None:
    state = ("--state-dir", str(tmp_path))
    up = _workgate("up", "--detach", "--bare", *state)
    try:
        assert up.returncode == 0, up.stderr
        exports = dict(
            line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines()
        )
        # The `up` process has exited; its control plane lives on, found through the pidfile.
        pids, ports = _children_of(tmp_path, bare=True)
        env = _workgate("env", *state)
        assert env.returncode == 0, env.stderr
        assert env.stdout == up.stdout
        bin_dir = exports["PATH"].strip('"').split(":", 1)[0]
        got = subprocess.run(
            [f"{bin_dir}/kubectl", "get", "crd", "builds.shipwright.io", "-o", "name"],
            env={**os.environ, "KUBECONFIG": exports["KUBECONFIG"]},
            capture_output=True,
            text=True,
            check=True,
        )
        assert (
            got.stdout.strip()
            == "customresourcedefinition.apiextensions.k8s.io/builds.shipwright.io"
        )
    finally:
        down = _workgate("down", *state)
    assert down.returncode == 0, down.stderr
    _assert_all_gone(pids, ports)
    assert not pidfile_path(tmp_path).exists()
    assert _workgate("env", *state).returncode == 1
