"""Argo CD health checks on objects the real operator wrote, not on hand-made samples.

The operator runs as a process against the test cluster; the tests play the Shipwright
controller (BuildRun status) and a reviewer (a Signal through the admission webhook), then
feed the WorkOrders and Waitpoints as the API server returns them to the Lua scripts, in
the Argo-like sandbox of the unit tests. The scripts are taken from the argocd-cm that the
deploy/argocd component renders, i.e. what Argo CD would actually run.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.test_rbac import (
    Cluster,
    Operator,
    connect,
    finish_build_run,
    free_port,
    get_json,
    wait_until,
    workorder_manifest,
)
from tests.unit.test_argocd_health import HEALTH_KEY, evaluate

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest) -> Cluster:
    return connect(request)


@pytest.fixture(scope="module")
def scripts(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The health scripts as the deploy/argocd component merges them into an argocd-cm."""
    base = tmp_path_factory.mktemp("argocd")
    argocd_cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "argocd-cm", "namespace": "argocd"},
        "data": {"url": "https://argocd.example.com"},
    }
    (base / "argocd-cm.yaml").write_text(yaml.safe_dump(argocd_cm))
    component = os.path.relpath(REPO / "deploy" / "argocd", base)
    (base / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": ["argocd-cm.yaml"], "components": [component]})
    )
    (rendered,) = yaml.safe_load_all(cluster.kubectl("kustomize", str(base)).stdout)
    data: dict[str, str] = rendered["data"]
    assert data["url"] == "https://argocd.example.com"  # merged into, not replaced
    return {kind: data[HEALTH_KEY.format(kind=kind)] for kind in ("WorkOrder", "Waitpoint")}


@pytest.fixture(scope="module")
def argo_namespace(cluster: Cluster) -> Iterator[str]:
    name = f"wg-argo-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def health(scripts: dict[str, str], obj: dict[str, Any]) -> dict[str, str]:
    return evaluate(scripts[obj["kind"]], obj)


def test_health_of_workorders_and_waitpoints_as_the_operator_writes_them(
    cluster: Cluster, argo_namespace: str, scripts: dict[str, str], tmp_path: Path
) -> None:
    k, ns = cluster.kubectl, argo_namespace
    # The test's own (admin) identity approves what it created: no separation of duties here.
    approve = {"key": "approval", "stage": "BeforeExecution", "requiredSignalNames": ["approve"],
               "forbidSelfApproval": False}  # fmt: skip
    late = {"key": "deadline", "stage": "BeforeExecution", "requiredSignalNames": ["approve"],
            "timeoutSeconds": 1, "onTimeout": "Fail"}  # fmt: skip
    orders = {
        "ok": workorder_manifest("ok", maxRetries=0),
        "bad": workorder_manifest("bad", maxRetries=0),
        "again": workorder_manifest("again", maxRetries=1, backoffSeconds=3600),
        "gated": workorder_manifest("gated", maxRetries=0, gates=[approve]),
        "late": workorder_manifest("late", maxRetries=0, gates=[late]),
    }
    for manifest in orders.values():
        k("create", "-n", ns, "-f", "-", input=manifest)

    def get(kind: str, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = k.json("get", "-n", ns, f"{kind}.workgate.io/{name}")
        return obj

    # Before any operator has looked at them.
    for name in orders:
        assert health(scripts, get("workorder", name))["status"] == "Progressing", name

    webhook_config = f"{ns}.test.workgate.io"
    op = Operator(
        tmp_path / "operator.log",
        {
            "KUBECONFIG": cluster.kubeconfig,
            "WORKGATE_NAMESPACES": ns,
            "WORKGATE_IDENTITY": "workgate-operator/argo-test",
            "WORKGATE_WEBHOOK": "on",
            "WORKGATE_WEBHOOK_CONFIG": webhook_config,
            "WORKGATE_WEBHOOK_PORT": str(free_port()),
            "WORKGATE_METRICS_PORT": "off",
        },
    )
    try:
        _run_through_the_phases(cluster, ns, scripts, op, get, webhook_config)
    finally:
        op.stop()
        for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
            k("delete", kind, webhook_config, "--ignore-not-found", check=False)


def _run_through_the_phases(
    cluster: Cluster,
    ns: str,
    scripts: dict[str, str],
    op: Operator,
    get: Any,
    webhook_config: str,
) -> None:
    k = cluster.kubectl

    def in_phase(name: str, phase: str) -> dict[str, Any] | None:
        wo = get_json(k, "get", "-n", ns, f"workorder.workgate.io/{name}")
        return wo if wo and (wo.get("status") or {}).get("phase") == phase else None

    def reach(name: str, phase: str) -> dict[str, Any]:
        found: dict[str, Any] = wait_until(lambda: in_phase(name, phase), f"{name} {phase}",
                                           operator=op)  # fmt: skip
        return found

    def waitpoint_in(name: str, state: str) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            wp = get_json(k, "get", "-n", ns, f"waitpoint.workgate.io/{name}")
            return wp if wp and (wp.get("status") or {}).get("state") == state else None

        found: dict[str, Any] = wait_until(probe, f"{name} {state}", operator=op)
        return found

    # Claimed build work: Progressing, saying who holds it (the operator's authenticated user).
    me = k("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").stdout
    assert me
    for name in ("ok", "bad", "again"):
        claimed = reach(name, "CLAIMED")
        assert health(scripts, claimed) == {
            "status": "Progressing",
            "message": f"attempt 1 held by {me}",
        }

    # Waiting at a waitpoint: both the WorkOrder and its Waitpoint are Suspended.
    waiting = reach("gated", "WAITING")
    assert health(scripts, waiting)["status"] == "Suspended"
    active = waitpoint_in("gated.approval", "active")
    assert health(scripts, active)["status"] == "Suspended"
    assert health(scripts, active)["message"].startswith("waiting for approve: 1 more")

    # The end of the attempts, as the Shipwright controller reports them.
    wait_until(lambda: get_json(k, "get", "-n", ns, "buildrun.shipwright.io/again-a1"),
               "BuildRun again-a1", operator=op)  # fmt: skip
    finish_build_run(k, ns, "ok-a1", succeeded=True)
    finish_build_run(k, ns, "bad-a1", succeeded=False)
    finish_build_run(k, ns, "again-a1", succeeded=False)

    assert health(scripts, reach("ok", "SUCCEEDED")) == {
        "status": "Healthy",
        "message": "succeeded on attempt 1",
    }
    failed = reach("bad", "FAILED")
    assert failed["status"]["lastError"] == "BuildRun bad-a1: step build failed"
    assert health(scripts, failed) == {
        "status": "Degraded",
        "message": failed["status"]["lastError"],
    }
    retrying = health(scripts, reach("again", "RETRY_PENDING"))
    assert retrying["status"] == "Progressing"
    assert retrying["message"].endswith("; last error: BuildRun again-a1: step build failed")

    # A waitpoint that expired: Degraded, and so is the WorkOrder it failed.
    expired = waitpoint_in("late.deadline", "closed")
    assert expired["status"]["closeReason"] == "Expired"
    assert health(scripts, expired)["status"] == "Degraded"
    assert health(scripts, reach("late", "FAILED"))["status"] == "Degraded"

    # A reviewer signals: the waitpoint closes Satisfied (Healthy) and the work goes on.
    wait_until(lambda: get_json(k, "get", "validatingwebhookconfiguration", webhook_config),
               "the webhook registration", operator=op)  # fmt: skip
    plugin = Path(sys.executable).parent / "kubectl-workgate"
    signalled = subprocess.run(
        [str(plugin), "signal", "gated.approval", "approve", "-n", ns],
        env={**os.environ, "KUBECONFIG": cluster.kubeconfig},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert signalled.returncode == 0, signalled.stdout + signalled.stderr
    satisfied = waitpoint_in("gated.approval", "closed")
    assert satisfied["status"]["closeReason"] == "Satisfied"
    assert health(scripts, satisfied)["status"] == "Healthy"
    assert health(scripts, reach("gated", "CLAIMED"))["status"] == "Progressing"
    assert get("workorder", "gated")["kind"] == "WorkOrder"
