"""Integration fixtures: the real operator as a process, an async API client, and a
stand-in for the Shipwright controller (the tests play it by writing BuildRun status).

The stand-in is for tests that need a BuildRun outcome at an exact moment (while the operator
is down, during a claim handover, ...). It works in the namespaces of the `namespace` fixture,
which the embedded plane's real Shipwright controller does not watch; `build_namespace` gives
one it does (tests/integration/test_build_real.py)."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from workgate.api.common import format_time, now_utc
from workgate.k8s.api import BUILDRUNS, WORKORDERS, ApiError, Body, KubeApi, load_config

SHIPPED_ROLES = Path(__file__).resolve().parents[2] / "deploy" / "rbac" / "roles.yaml"


def shipped_role(name: str) -> dict[str, Any]:
    """A ClusterRole exactly as deploy/rbac/roles.yaml ships it (tests grant what users get)."""
    for doc in yaml.safe_load_all(SHIPPED_ROLES.read_text()):
        if doc and doc["metadata"]["name"] == name:
            return dict(doc)
    raise AssertionError(f"deploy/rbac/roles.yaml ships no role {name}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class OperatorProcess:
    """`workgate run` in a subprocess, scoped to some namespaces, killable and restartable."""

    def __init__(self, log_path: Path, namespaces: list[str], env: dict[str, str]) -> None:
        self.log_path = log_path
        self.namespaces = namespaces
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def webhook_config(self) -> str:
        return self.env.get("WORKGATE_WEBHOOK_CONFIG", "")

    def start(self) -> None:
        env = {
            **os.environ,
            "WORKGATE_NAMESPACES": ",".join(self.namespaces),
            "WORKGATE_IDENTITY": "workgate-operator/test",
            **self.env,
        }
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "workgate.cli.main", "run"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as in a node crash or OOM kill."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def start_operator(kubeconfig: str, tmp_path: Path) -> Iterator[Callable[..., OperatorProcess]]:
    started: list[OperatorProcess] = []
    registered: list[str] = []  # webhook configurations this test's operators register

    def start(*namespaces: str, webhook: bool = False, **env: str) -> OperatorProcess:
        env = {
            "WORKGATE_WEBHOOK": "off",
            "WORKGATE_METRICS_PORT": "off",
            # The key Secret and the admission Lease in the test's own namespace, not in
            # workgate-system: a real installation's, or one another module is deleting.
            "WORKGATE_OPERATOR_NAMESPACE": namespaces[0],
            **env,
        }
        if webhook:
            env = {
                "WORKGATE_WEBHOOK_PORT": str(free_port()),
                "WORKGATE_WEBHOOK_CONFIG": f"{namespaces[0]}.test.workgate.io",
                **env,
                "WORKGATE_WEBHOOK": "on",
            }
            name = env["WORKGATE_WEBHOOK_CONFIG"]
            if name not in registered:
                taken = kubectl_out("get", "validatingwebhookconfiguration", name, "-o", "name")
                assert not taken, f"{taken} exists already: not this test's to take over"
                registered.append(name)
        op = OperatorProcess(tmp_path / f"operator-{len(started)}.log", list(namespaces), env)
        op.start()
        started.append(op)
        return op

    yield start
    for op in started:
        op.stop()
    # A webhook whose server is gone would refuse every later request (failurePolicy Fail).
    # Only the ones this test's operators registered: none existed when they started.
    for name in registered:
        for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
            kubectl_out("delete", kind, name)


async def start_with_webhook(
    start_operator: Callable[..., OperatorProcess], api: KubeApi, namespace: str, **env: str
) -> OperatorProcess:
    """Start an operator with its webhooks, and wait until both configurations list them:
    until then the API server admits everything without asking the operator."""
    op = start_operator(namespace, webhook=True, **env)
    for kind in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations"):
        path = f"/apis/admissionregistration.k8s.io/v1/{kind}/{op.webhook_config}"

        async def registered(path: str = path) -> bool:
            return bool((await api.get(path)).get("webhooks"))

        await wait_for(registered, timeout=30, what=f"{kind} registered")
    return op


def kubectl_out(*args: str) -> str:
    """kubectl (the cluster fixture's, first on PATH), not-found ignored; its stdout."""
    result = subprocess.run(
        ["kubectl", *args, "--ignore-not-found"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
    return result.stdout.strip()


@pytest.fixture
async def api(kubeconfig: str) -> AsyncIterator[KubeApi]:
    client = KubeApi(load_config())
    yield client
    await client.aclose()


def workorder(name: str, work_type: str = "build", yaml: str | None = None, **spec: Any) -> Body:
    return {
        "apiVersion": "workgate.io/v1alpha1",
        "kind": "WorkOrder",
        "metadata": {"name": name},
        "spec": {
            "workType": work_type,
            "yamlContent": yaml if yaml is not None else build_yaml(name),
            **spec,
        },
    }


def build_yaml(name: str) -> str:
    return (
        "apiVersion: shipwright.io/v1beta1\nkind: Build\nmetadata:\n"
        f"  name: {name}-build\nspec:\n  source:\n    type: Git\n    git:\n"
        "      url: https://git.example.com/team/app\n  strategy:\n    name: buildah\n"
        "    kind: ClusterBuildStrategy\n  output:\n    image: registry.example.com/team/app:latest\n"
    )


async def create_workorder(api: KubeApi, namespace: str, body: Body) -> Body:
    return await api.create(WORKORDERS.path(namespace), body)


async def get_workorder(api: KubeApi, namespace: str, name: str) -> Body:
    return await api.get(WORKORDERS.path(namespace, name))


async def wait_for(
    probe: Callable[[], Any],
    *,
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "condition",
) -> Any:
    """Poll a probe (a plain or an async function) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
            if inspect.isawaitable(last):
                last = await last
        except ApiError as exc:
            if not exc.not_found:
                raise
            last = None
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


async def wait_phase(
    api: KubeApi, namespace: str, name: str, *phases: str, timeout: float = 30.0
) -> Body:
    async def probe() -> Body | None:
        wo = await get_workorder(api, namespace, name)
        return wo if (wo.get("status") or {}).get("phase") in phases else None

    result: Body = await wait_for(probe, timeout=timeout, what=f"{name} in {phases}")
    return result


async def finish_build_run(
    api: KubeApi, namespace: str, name: str, succeeded: bool, reason: str = "", message: str = ""
) -> None:
    """Play the Shipwright controller: set the BuildRun's Succeeded condition, now (see the
    module docstring for where that is possible, and why)."""
    condition = {
        "type": "Succeeded",
        "status": "True" if succeeded else "False",
        "reason": reason or ("Succeeded" if succeeded else "Failed"),
        "message": message
        or ("All Steps have completed executing" if succeeded else "step failed"),
        "lastTransitionTime": format_time(now_utc().replace(microsecond=0)),
    }
    await api.merge_patch(
        BUILDRUNS.path(namespace, name, "status"), {"status": {"conditions": [condition]}}
    )


async def list_items(api: KubeApi, path: str, **params: str) -> list[Body]:
    listing = await api.get(path, params=params or None)
    items: list[Body] = listing.get("items", [])
    return items


def service_account_kubeconfig(kubectl: Any, namespace: str, name: str, directory: Path) -> str:
    """A kubeconfig that authenticates as a new ServiceAccount (TokenRequest token)."""
    kubectl("create", "serviceaccount", name, "-n", namespace)
    token = kubectl("create", "token", name, "-n", namespace).stdout.strip()
    raw = json.loads(kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    cluster = raw["clusters"][0]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [
            {
                "name": name,
                "context": {"cluster": cluster["name"], "user": name, "namespace": namespace},
            }
        ],
        "current-context": name,
    }
    path = directory / f"{name}.kubeconfig"
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return str(path)


def scrape_metrics(url: str) -> str:
    """The text of a metrics endpoint (blocking: call it with asyncio.to_thread)."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text: str = response.read().decode()
    return text
