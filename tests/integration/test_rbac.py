"""The RBAC in deploy/ against a real API server: each role can do its job, and no more.

The roles are applied from deploy/ itself (never restated here). Each subject is a
ServiceAccount: `kubectl auth can-i --as` checks the rules, and real requests made with
the ServiceAccount's own TokenRequest token check that the API server agrees. Finally the
operator process runs with nothing but its ServiceAccount's token and takes a build
WorkOrder (behind a waitpoint that a reviewer signals) to SUCCEEDED, while an agent
claims and finishes other work with its own token.

The CRDs of deploy/ are only applied with --dry-run=server here: the cluster fixture
installs the same ones from crds/ (`workgate crds --check` keeps the copies identical), and
a real apply must not disturb other tests sharing the cluster.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
SYSTEM_NS = "workgate-system"
OPERATOR_SA = f"system:serviceaccount:{SYSTEM_NS}:workgate-operator"
WEBHOOK_CONFIG = "workgate.io"  # the name deploy/base registers and grants
WEBHOOK_KINDS = ("validatingwebhookconfiguration", "mutatingwebhookconfiguration")


# --- a cluster and kubectl -------------------------------------------------------------


@dataclass
class Kubectl:
    """kubectl bound to one kubeconfig. Calls return the CompletedProcess; check=True raises."""

    binary: str
    kubeconfig: str

    def __call__(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.binary, f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json").stdout)

    def apply(self, manifest: str | list[dict[str, Any]], *args: str) -> str:
        text = manifest if isinstance(manifest, str) else yaml.safe_dump_all(manifest)
        return self("apply", "-f", "-", *args, input=text).stdout

    def forbidden(self, *args: str, input: str | None = None) -> str:
        """Run a request that must be refused by authorization; return the refusal."""
        result = self(*args, input=input, check=False)
        assert result.returncode != 0, f"kubectl {' '.join(args)} was allowed:\n{result.stdout}"
        assert "Forbidden" in result.stderr or "forbidden" in result.stderr, result.stderr
        return result.stderr

    def can_i(self, subject: str, check: Check) -> bool:
        args = ["auth", "can-i", check.verb, check.target, f"--as={subject}"]
        if check.where == "all":
            args.append("--all-namespaces")
        elif check.where is not None:
            args += ["-n", check.where]
        if check.sub:
            args.append(f"--subresource={check.sub}")
        result = self(*args, check=False)
        answer = result.stdout.strip()
        assert answer in ("yes", "no"), result.stderr
        return answer == "yes"


@dataclass
class Cluster:
    kubeconfig: str
    kubectl: Kubectl
    server: dict[str, Any] = field(default_factory=dict)  # the kubeconfig's cluster entry

    def token_kubeconfig(self, namespace: str, account: str, directory: Path) -> str:
        """A kubeconfig that authenticates as the ServiceAccount, by a TokenRequest token."""
        token = self.kubectl("create", "token", account, "-n", namespace, "--duration=2h")
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "cluster", "cluster": self.server}],
            "users": [{"name": account, "user": {"token": token.stdout.strip()}}],
            "contexts": [
                {
                    "name": account,
                    "context": {"cluster": "cluster", "user": account, "namespace": namespace},
                }
            ],
            "current-context": account,
        }
        path = directory / f"{namespace}-{account}.kubeconfig"
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return str(path)


READY_TIMEOUT = 120.0  # a freshly started (or busy, 2-core) API server answers within this


def _kubeconfig(request: pytest.FixtureRequest) -> str:
    """The session's cluster (tests/conftest.py): it fails loudly when there is none."""
    return str(request.getfixturevalue("kubeconfig"))


def wait_ready(kubectl: Kubectl, timeout: float = READY_TIMEOUT) -> None:
    """Poll /readyz until the API server answers; fail (never skip) when it does not."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            result = kubectl("get", "--raw", "/readyz", check=False, timeout=15)
        except subprocess.TimeoutExpired:
            last = "kubectl get --raw /readyz timed out"
        else:
            if result.returncode == 0:
                return
            last = result.stderr.strip()
        time.sleep(1)
    raise AssertionError(f"the API server was not ready within {timeout:.0f}s: {last}")


def connect(request: pytest.FixtureRequest) -> Cluster:
    """The test cluster: the session's `kubeconfig` fixture. Whatever is missing fails."""
    kubeconfig = _kubeconfig(request)
    binary = shutil.which("kubectl")  # the cluster fixture puts its kubectl first on PATH
    assert binary is not None, "no kubectl on PATH (the cluster fixture puts one first)"
    kubectl = Kubectl(binary, kubeconfig)
    version = kubectl("version", "--client", "-o", "json", check=False)
    assert version.returncode == 0 and "kustomizeVersion" in version.stdout, (
        f"{binary} is not a kubectl with kustomize: {version.stdout}{version.stderr}"
    )
    wait_ready(kubectl)
    view = kubectl.json("config", "view", "--raw", "--minify", "--flatten")
    return Cluster(kubeconfig, kubectl, view["clusters"][0]["cluster"])


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest) -> Cluster:
    return connect(request)


@pytest.fixture(scope="module")
def test_namespace(cluster: Cluster) -> Iterator[str]:
    name = f"wg-rbac-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def render(kustomization: Path, kubectl: Kubectl) -> list[dict[str, Any]]:
    out = kubectl("kustomize", str(kustomization)).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def install(cluster: Cluster) -> list[dict[str, Any]]:
    """Apply deploy/overlays/local, except the CRDs (see the module docstring); return
    what was applied, for `uninstall`. Refuses a cluster that has workgate installed
    already: the overlay would scale its Deployment to 0 and rebind its roles."""
    docs = render(DEPLOY / "overlays" / "local", cluster.kubectl)
    kinds = {doc["kind"] for doc in docs}
    assert {"CustomResourceDefinition", "ClusterRole", "Deployment"} <= kinds
    present = cluster.kubectl("get", "deployment", "workgate-operator", "-n", SYSTEM_NS,
                              "--ignore-not-found", "-o", "name").stdout.strip()  # fmt: skip
    assert not present, (
        f"{present} exists in {SYSTEM_NS}: this module installs deploy/ itself and removes "
        "it afterwards; run it against a cluster without a workgate installation"
    )
    applied = [d for d in docs if d["kind"] != "CustomResourceDefinition"]
    cluster.kubectl.apply(applied)
    return applied


def uninstall(cluster: Cluster, applied: list[dict[str, Any]]) -> None:
    """Delete what `install` applied (its namespace last, without waiting)."""
    cluster.kubectl("delete", "-f", "-", "--ignore-not-found", "--wait=false",
                    input=yaml.safe_dump_all(applied), check=False)  # fmt: skip


# --- the subjects ----------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    verb: str
    resource: str
    where: str | None = "ns"  # "ns": the test namespace; "all"; a namespace; None: cluster
    sub: str | None = None
    name: str | None = None

    @property
    def target(self) -> str:
        return f"{self.resource}/{self.name}" if self.name else self.resource

    def resolved(self, namespace: str) -> Check:
        where = namespace if self.where == "ns" else self.where
        return Check(self.verb, self.resource, where, self.sub, self.name)

    def __str__(self) -> str:
        sub = f"/{self.sub}" if self.sub else ""
        return f"{self.verb} {self.target}{sub} in {self.where or 'cluster'}"


@dataclass
class Subjects:
    namespace: str
    kubeconfigs: dict[str, str]  # role -> kubeconfig of its ServiceAccount

    def user(self, role: str) -> str:
        if role == "operator":
            return OPERATOR_SA
        return f"system:serviceaccount:{self.namespace}:{role}"

    def kubectl(self, cluster: Cluster, role: str) -> Kubectl:
        return Kubectl(cluster.kubectl.binary, self.kubeconfigs[role])


@pytest.fixture(scope="module")
def subjects(
    cluster: Cluster, test_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Subjects]:
    """Install deploy/, then one ServiceAccount per role, bound as the README says."""
    applied = install(cluster)
    try:
        yield _subjects(cluster, test_namespace, tmp_path_factory)
    finally:
        uninstall(cluster, applied)


def _subjects(
    cluster: Cluster, test_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Subjects:
    k, ns = cluster.kubectl, test_namespace
    for role in ("author", "reviewer", "agent"):
        k("create", "serviceaccount", role, "-n", ns)
        k("create", "rolebinding", role, "-n", ns, f"--clusterrole=workgate-{role}",
          f"--serviceaccount={ns}:{role}")  # fmt: skip
    # The per-namespace template for reviewers' Secret access, from deploy/ as shipped.
    k("apply", "-n", ns, "-f", str(DEPLOY / "rbac" / "reviewer-secrets-role.yaml"))
    k("create", "rolebinding", "reviewer-secrets", "-n", ns, "--role=workgate-reviewer-secrets",
      f"--serviceaccount={ns}:reviewer")  # fmt: skip
    directory = tmp_path_factory.mktemp("kubeconfigs")
    kubeconfigs = {
        role: cluster.token_kubeconfig(ns, role, directory)
        for role in ("author", "reviewer", "agent")
    }
    kubeconfigs["operator"] = cluster.token_kubeconfig(SYSTEM_NS, "workgate-operator", directory)
    # Something to be refused: a Secret and a ConfigMap nobody here has business reading.
    k("create", "secret", "generic", "unrelated", "-n", ns, "--from-literal=password=hunter2")
    k("create", "configmap", "unrelated", "-n", ns, "--from-literal=a=b")
    return Subjects(ns, kubeconfigs)


# --- manifests -------------------------------------------------------------------------


@pytest.mark.parametrize("kustomization", ["default", "overlays/local"])
def test_the_api_server_accepts_the_install(
    cluster: Cluster, subjects: Subjects, kustomization: str
) -> None:
    # After install(), so that workgate-system exists: a server-side dry run cannot create
    # the namespace that the objects after it live in.
    out = cluster.kubectl("apply", "-k", str(DEPLOY / kustomization), "--dry-run=server")
    lines = out.stdout.splitlines()
    assert all(line.endswith("(server dry run)") for line in lines), out.stdout
    for kind in ("customresourcedefinition", "clusterrole", "deployment.apps"):
        assert any(line.startswith(f"{kind}") for line in lines), (kind, lines)


# --- can-i tables: what each role may and may not do ------------------------------------

WO, LEASE, BUILD, RUN = (
    "workorders.workgate.io",
    "leases.coordination.k8s.io",
    "builds.shipwright.io",
    "buildruns.shipwright.io",
)
WP, SIG = "waitpoints.workgate.io", "signals.workgate.io"
VWC = "validatingwebhookconfigurations.admissionregistration.k8s.io"
MWC = "mutatingwebhookconfigurations.admissionregistration.k8s.io"

ALLOWED: dict[str, list[Check]] = {
    "operator": [
        Check("get", WO), Check("list", WO, "all"), Check("watch", WO, "all"),
        Check("patch", WO, sub="status"),
        Check("create", LEASE), Check("patch", LEASE), Check("delete", LEASE),
        Check("list", LEASE, "all"), Check("watch", LEASE, "all"),
        Check("get", BUILD), Check("create", BUILD), Check("patch", BUILD),
        Check("get", RUN), Check("create", RUN), Check("patch", RUN),  # patch: cancel a run
        Check("list", RUN, "all"), Check("watch", RUN, "all"),
        Check("create", "events"),
        Check("delete", WO),  # ttlSecondsAfterFinished
        Check("delete", WP),  # a rerun asks anew at a gate that closed without passing
        Check("list", "customresourcedefinitions.apiextensions.k8s.io", None),
        Check("watch", "customresourcedefinitions.apiextensions.k8s.io", None),
        Check("list", "namespaces", None), Check("watch", "namespaces", None),
        Check("get", WP), Check("list", WP, "all"), Check("watch", WP, "all"), Check("create", WP),
        Check("patch", WP, sub="status"),
        Check("list", SIG, "all"), Check("watch", SIG, "all"), Check("patch", SIG, sub="status"),
        Check("create", "secrets"),
        Check("get", "secrets", SYSTEM_NS, name="workgate-token-key"),
        Check("create", "subjectaccessreviews.authorization.k8s.io", None),
        Check("create", VWC, None), Check("patch", VWC, None, name=WEBHOOK_CONFIG),
        Check("create", MWC, None), Check("patch", MWC, None, name=WEBHOOK_CONFIG),
    ],
    "author": [
        *(Check(verb, WO) for verb in ("create", "update", "patch", "delete", "get", "list")),
        Check("watch", WO),
        *(Check(verb, kind) for verb in ("get", "list", "watch") for kind in (WP, SIG)),
    ],
    "reviewer": [
        *(Check(verb, kind) for verb in ("get", "list", "watch") for kind in (WO, WP, SIG)),
        Check("create", SIG),
        Check("get", "secrets"),  # through the per-namespace workgate-reviewer-secrets Role
    ],
    "agent": [
        Check("get", WO), Check("list", WO), Check("watch", WO),
        *(Check(verb, LEASE) for verb in ("create", "get", "update", "patch", "delete")),
        Check("list", LEASE), Check("watch", LEASE),  # the agent's watch-driven work feed
        Check("create", WP), Check("get", WP),
    ],
}  # fmt: skip

REFUSED: dict[str, list[Check]] = {
    "operator": [
        Check("delete", "namespaces", None, name="default"), Check("create", "namespaces", None),
        Check("get", "configmaps"), Check("list", "configmaps", "all"),
        Check("get", "secrets"), Check("list", "secrets", "all"),
        Check("get", "secrets", SYSTEM_NS, name="someone-elses"),
        Check("create", WO), Check("update", WO),
        Check("update", WO, sub="status"),
        Check("delete", RUN), Check("delete", BUILD), Check("update", BUILD),
        Check("create", SIG), Check("delete", SIG),
        Check("patch", VWC, None, name="someone-elses"), Check("delete", VWC, None, name=WEBHOOK_CONFIG),
        Check("create", "pods"), Check("create", "clusterrolebindings.rbac.authorization.k8s.io", None),
        Check("impersonate", "users", None), Check("create", "serviceaccounts", sub="token"),
    ],
    "author": [
        Check("patch", WO, sub="status"), Check("update", WO, sub="status"),
        Check("get", "secrets"), Check("create", SIG), Check("create", WP),
        Check("create", LEASE), Check("create", BUILD), Check("list", WO, "all"),
    ],
    "reviewer": [
        Check("create", WO), Check("patch", WO), Check("delete", WO),
        Check("list", "secrets"), Check("watch", "secrets"),
        Check("get", "secrets", SYSTEM_NS), Check("patch", SIG, sub="status"),
        Check("delete", SIG), Check("update", WP),
    ],
    "agent": [
        Check("patch", WO, sub="status"), Check("create", WO), Check("create", BUILD),
        Check("get", "secrets"), Check("create", LEASE, "kube-system"),
        Check("list", WO, "all"), Check("list", WP), Check("delete", WP),
        Check("patch", WP, sub="status"), Check("create", SIG),
    ],
}  # fmt: skip


@pytest.mark.parametrize("role", ["operator", "author", "reviewer", "agent"])
def test_can_i(cluster: Cluster, subjects: Subjects, role: str) -> None:
    user = subjects.user(role)
    wrong = [
        f"{'cannot' if expected else 'can'} {check}"
        for expected, checks in ((True, ALLOWED[role]), (False, REFUSED[role]))
        for check in (c.resolved(subjects.namespace) for c in checks)
        if cluster.kubectl.can_i(user, check) != expected
    ]
    assert not wrong, f"{role}:\n" + "\n".join(wrong)


# --- real requests with each ServiceAccount's own token -----------------------------------


def build_manifest(name: str) -> str:
    return (
        "apiVersion: shipwright.io/v1beta1\nkind: Build\nmetadata:\n"
        f"  name: {name}\nspec:\n  source:\n    type: Git\n    git:\n"
        "      url: https://git.example.com/team/app\n  strategy:\n    name: buildah\n"
        "    kind: ClusterBuildStrategy\n  output:\n    image: registry.example.com/team/app:v1\n"
    )


def workorder_manifest(name: str, work_type: str = "build", **spec: Any) -> str:
    yaml_content = build_manifest(f"{name}-build") if work_type == "build" else "job: x\n"
    return json.dumps(
        {
            "apiVersion": "workgate.io/v1alpha1",
            "kind": "WorkOrder",
            "metadata": {"name": name},
            "spec": {"workType": work_type, "yamlContent": yaml_content, **spec},
        }
    )


STATUS_PATCH = '{"status": {"phase": "SUCCEEDED"}}'


def test_the_operator_token(cluster: Cluster, subjects: Subjects) -> None:
    op, ns = subjects.kubectl(cluster, "operator"), subjects.namespace
    assert op("get", "workorders.workgate.io", "--all-namespaces").returncode == 0
    op.forbidden("get", "configmap", "unrelated", "-n", ns)
    op.forbidden("get", "secret", "unrelated", "-n", ns)
    # Destructive requests as dry runs: authorization is decided before the dry run.
    op.forbidden("delete", "namespace", ns, "--dry-run=server")
    op.forbidden("create", "-n", ns, "--dry-run=server", "-f", "-", input=workorder_manifest("x"))


def test_the_author_token(cluster: Cluster, subjects: Subjects) -> None:
    author, ns = subjects.kubectl(cluster, "author"), subjects.namespace
    author("create", "-n", ns, "-f", "-", input=workorder_manifest("authored", "report"))
    author("label", "-n", ns, "workorder.workgate.io/authored", "team=a")
    author.forbidden("patch", "-n", ns, "workorder.workgate.io/authored", "--subresource=status",
                     "--type=merge", "-p", STATUS_PATCH)  # fmt: skip
    author.forbidden("get", "secret", "unrelated", "-n", ns)
    author.forbidden("create", "-n", ns, "-f", "-", input=build_manifest("sneaky"))
    author("delete", "-n", ns, "workorder.workgate.io/authored")


def test_the_reviewer_token(cluster: Cluster, subjects: Subjects) -> None:
    reviewer, ns = subjects.kubectl(cluster, "reviewer"), subjects.namespace
    reviewer.forbidden("create", "-n", ns, "-f", "-", input=workorder_manifest("r", "report"))
    reviewer.forbidden("get", "secrets", "-n", ns)  # list: names are not handed out
    # What the per-namespace Role costs: any Secret of the namespace, by name.
    assert reviewer("get", "secret", "unrelated", "-n", ns).returncode == 0
    reviewer.forbidden("get", "secret", "workgate-token-key", "-n", SYSTEM_NS)
    assert reviewer("get", "waitpoints.workgate.io", "-n", ns).returncode == 0


def test_the_agent_token(cluster: Cluster, subjects: Subjects) -> None:
    agent, ns = subjects.kubectl(cluster, "agent"), subjects.namespace
    cluster.kubectl("create", "-n", ns, "-f", "-", input=workorder_manifest("queued", "lint"))
    assert "queued" in agent("get", "workorders.workgate.io", "-n", ns).stdout
    agent.forbidden("patch", "-n", ns, "workorder.workgate.io/queued", "--subresource=status",
                    "--type=merge", "-p", STATUS_PATCH)  # fmt: skip
    agent.forbidden("create", "-n", ns, "-f", "-", input=build_manifest("sneaky"))
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "probe", "namespace": ns},
        "spec": {"holderIdentity": "agent", "leaseDurationSeconds": 30},
    }
    agent("create", "-f", "-", input=json.dumps(lease))
    agent("delete", "-n", ns, "lease", "probe")
    agent.forbidden("create", "-n", "kube-system", "--dry-run=server", "-f", "-",
                    input=json.dumps({**lease, "metadata": {"name": "probe"}}))  # fmt: skip
    cluster.kubectl("delete", "-n", ns, "workorder.workgate.io/queued")


# --- the operator on its ServiceAccount alone ---------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Operator:
    """`workgate run` as a process, with the environment it is given and nothing else."""

    def __init__(self, log_path: Path, env: dict[str, str]) -> None:
        self.log_path = log_path
        self.env = env
        base = {k: v for k, v in os.environ.items() if not k.startswith("WORKGATE_")}
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "workgate.cli.main", "run", "--log-level=info"],
                env={**base, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def wait_until(
    probe: Callable[[], Any], what: str, timeout: float = 45, operator: Operator | None = None
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        if operator is not None and not operator.alive():
            raise AssertionError(f"the operator exited while waiting for {what}:\n{operator.log}")
        time.sleep(0.2)
    tail = f"\noperator log:\n{operator.log[-6000:]}" if operator else ""
    raise AssertionError(f"timed out waiting for {what} (last: {last!r}){tail}")


def get_json(kubectl: Kubectl, *args: str) -> Any:
    result = kubectl(*args, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def phase_of(kubectl: Kubectl, namespace: str, name: str) -> str | None:
    wo = get_json(kubectl, "get", "-n", namespace, f"workorder.workgate.io/{name}")
    return None if wo is None else (wo.get("status") or {}).get("phase")


def finish_build_run(kubectl: Kubectl, namespace: str, name: str, succeeded: bool) -> None:
    """Play the Shipwright controller: write the BuildRun's Succeeded condition."""
    condition = {
        "type": "Succeeded",
        "status": "True" if succeeded else "False",
        "reason": "Succeeded" if succeeded else "Failed",
        "message": "All Steps have completed executing" if succeeded else "step build failed",
        "lastTransitionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    kubectl("patch", "-n", namespace, f"buildrun.shipwright.io/{name}", "--subresource=status",
            "--type=merge", "-p", json.dumps({"status": {"conditions": [condition]}}))  # fmt: skip


@pytest.fixture(scope="module")
def operator(
    cluster: Cluster, subjects: Subjects, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    """The operator with its ServiceAccount's token as its only credentials."""
    # The name deploy/ grants the operator is fixed: make sure it is not someone else's
    # registration before taking it over, so that removing it afterwards is safe.
    for kind in WEBHOOK_KINDS:
        theirs = get_json(cluster.kubectl, "get", kind, WEBHOOK_CONFIG)
        assert theirs is None, (
            f"{kind} {WEBHOOK_CONFIG} exists already (a workgate installation?): this module "
            "registers its own under that name and deletes it afterwards"
        )
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    op = Operator(
        log,
        {
            "KUBECONFIG": subjects.kubeconfigs["operator"],
            "WORKGATE_NAMESPACES": subjects.namespace,
            "WORKGATE_IDENTITY": "workgate-operator/rbac-test",
            "WORKGATE_OPERATOR_NAMESPACE": SYSTEM_NS,
            # The admission webhook as deployed: registered by the operator under the name
            # its ClusterRole allows, served on a free loopback port.
            "WORKGATE_WEBHOOK": "on",
            "WORKGATE_WEBHOOK_CONFIG": WEBHOOK_CONFIG,
            "WORKGATE_WEBHOOK_PORT": str(free_port()),
            # Probes and metrics as the Deployment configures them, on free ports.
            "WORKGATE_LIVENESS_ENDPOINT": f"http://127.0.0.1:{free_port()}/healthz",
            "WORKGATE_METRICS_PORT": str(free_port()),
        },
    )
    try:

        def registered() -> bool:
            vwc = get_json(cluster.kubectl, "get", "validatingwebhookconfiguration",
                           WEBHOOK_CONFIG)  # fmt: skip
            return bool(vwc and vwc.get("webhooks"))

        wait_until(registered, "the webhook registration", operator=op)
        yield op
    finally:
        op.stop()
        # A registration whose server is gone would refuse every later Signal. It is ours:
        # none existed before the operator started (checked above).
        for kind in WEBHOOK_KINDS:
            cluster.kubectl("delete", kind, WEBHOOK_CONFIG, "--ignore-not-found", check=False)


def assert_no_refusals(op: Operator) -> None:
    """Nothing in the log says the API server refused the operator (ApiError or Kopf)."""
    log = op.log
    for sign in ("403 Forbidden", "APIForbiddenError", "Not enough permissions", "Not enough RBAC"):
        assert sign not in log, f"the operator was refused something ({sign!r}):\n{log[-6000:]}"


def test_the_operator_runs_a_build_on_its_service_account_alone(
    cluster: Cluster, subjects: Subjects, operator: Operator
) -> None:
    k, ns = cluster.kubectl, subjects.namespace
    k("create", "-n", ns, "-f", "-", input=workorder_manifest("app", maxRetries=0))
    wait_until(lambda: phase_of(k, ns, "app") == "CLAIMED", "app CLAIMED", operator=operator)
    run = wait_until(lambda: get_json(k, "get", "-n", ns, "buildrun.shipwright.io/app-a1"),
                     "BuildRun app-a1", operator=operator)  # fmt: skip
    assert run["spec"]["build"]["name"] == "app-build"
    build = k.json("get", "-n", ns, "build.shipwright.io/app-build")
    assert build["metadata"]["ownerReferences"][0]["name"] == "app"
    lease = k.json("get", "-n", ns, "lease", "app-claim")
    # The holder is the identity the API server authenticated: the operator's ServiceAccount.
    assert lease["spec"]["holderIdentity"] == f"system:serviceaccount:{SYSTEM_NS}:workgate-operator"
    claimed = scrape(operator)  # metrics move with the WorkOrder: CLAIMED now, SUCCEEDED later
    assert 'workgate_workorders{phase="CLAIMED",work_type="build"} 1.0' in claimed, claimed

    finish_build_run(k, ns, "app-a1", succeeded=True)
    wait_until(lambda: phase_of(k, ns, "app") == "SUCCEEDED", "app SUCCEEDED", operator=operator)
    record = k.json("get", "-n", ns, "lease", "app-claim")  # kept: who ran attempt 1
    assert record["metadata"]["uid"] == lease["metadata"]["uid"]

    def reasons() -> set[str]:
        events = k.json("get", "events", "-n", ns, "--field-selector", "involvedObject.name=app")
        return {e["reason"] for e in events["items"]}

    # Events are sent in the background (k8s/events.py): wait for this one.
    wait_until(lambda: "Succeeded" in reasons(), "the Succeeded Event", operator=operator)

    # The endpoints the Deployment probes and Prometheus scrapes.
    health = urllib.request.urlopen(operator.env["WORKGATE_LIVENESS_ENDPOINT"], timeout=5)
    assert health.status == 200
    text = scrape(operator)
    assert 'workgate_workorders{phase="SUCCEEDED",work_type="build"} 1.0' in text, text
    assert 'workgate_workorders{phase="CLAIMED",work_type="build"} 0.0' in text, text
    assert 'workgate_attempt_duration_seconds_count{outcome="succeeded",work_type="build"}' in text
    assert_no_refusals(operator)


def scrape(operator: Operator) -> str:
    port = operator.env["WORKGATE_METRICS_PORT"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as scraped:
        text: str = scraped.read().decode()
    return text


def test_a_reviewer_opens_a_gate_and_an_agent_does_work_each_on_its_own_token(
    cluster: Cluster, subjects: Subjects, operator: Operator
) -> None:
    k, ns = cluster.kubectl, subjects.namespace
    gate = {"key": "approval", "stage": "BeforeExecution", "requiredSignalNames": ["approve"]}
    k("create", "-n", ns, "-f", "-", input=workorder_manifest("gated", gates=[gate]))
    wait_until(lambda: phase_of(k, ns, "gated") == "WAITING", "gated WAITING", operator=operator)

    def token_written() -> bool:
        wp = get_json(k, "get", "-n", ns, "waitpoint.workgate.io/gated.approval")
        status = (wp or {}).get("status") or {}
        return status.get("state") == "active" and bool(status.get("tokenSecretName"))

    wait_until(token_written, "the waitpoint's token", operator=operator)
    # The reviewer signals with the kubectl plugin and nothing but its own token: it reads
    # the waitpoint and its token Secret, and creates the Signal the webhook admits.
    plugin = Path(sys.executable).parent / "kubectl-workgate"
    signalled = subprocess.run(
        [str(plugin), "signal", "gated.approval", "approve", "-n", ns, "--payload", "lgtm"],
        env={**os.environ, "KUBECONFIG": subjects.kubeconfigs["reviewer"]},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert signalled.returncode == 0, signalled.stdout + signalled.stderr
    run = wait_until(lambda: get_json(k, "get", "-n", ns, "buildrun.shipwright.io/gated-a1"),
                     "BuildRun gated-a1", operator=operator)  # fmt: skip
    finish_build_run(k, ns, run["metadata"]["name"], succeeded=True)
    wait_until(lambda: phase_of(k, ns, "gated") == "SUCCEEDED", "gated SUCCEEDED",
               operator=operator)  # fmt: skip
    wp = k.json("get", "-n", ns, "waitpoint.workgate.io/gated.approval")
    (received,) = wp["status"]["receivedSignals"]
    assert received["sender"] == subjects.user("reviewer")

    # An author queues agent work with its own token; an agent claims it and reports.
    author = subjects.kubectl(cluster, "author")
    author("create", "-n", ns, "-f", "-", input=workorder_manifest("lint", "lint"))
    agent_run = subprocess.run(
        [sys.executable, "-c", AGENT_SCRIPT, ns, "suspend"],
        env={**os.environ, "KUBECONFIG": subjects.kubeconfigs["agent"]},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert agent_run.returncode == 0, agent_run.stdout + agent_run.stderr
    assert agent_run.stdout.strip() == "suspended lint at lint.check"
    wait_until(lambda: phase_of(k, ns, "lint") == "WAITING", "lint WAITING", operator=operator)
    # The reviewer opens the agent's waitpoint; the agent claims the work again and finishes.
    signalled = subprocess.run(
        [str(plugin), "signal", "lint.check", "ok", "-n", ns],
        env={**os.environ, "KUBECONFIG": subjects.kubeconfigs["reviewer"]},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert signalled.returncode == 0, signalled.stdout + signalled.stderr
    wait_until(lambda: phase_of(k, ns, "lint") == "PENDING", "lint PENDING", operator=operator)
    agent_run = subprocess.run(
        [sys.executable, "-c", AGENT_SCRIPT, ns, "finish"],
        env={**os.environ, "KUBECONFIG": subjects.kubeconfigs["agent"]},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert agent_run.returncode == 0, agent_run.stdout + agent_run.stderr
    assert agent_run.stdout.strip() == "finished lint"
    wait_until(lambda: phase_of(k, ns, "lint") == "SUCCEEDED", "lint SUCCEEDED", operator=operator)

    # Build work makes the operator create Builds, so admission asks whether the author
    # could: workgate-author alone cannot (see deploy/README.md).
    refused = author("create", "-n", ns, "-f", "-", input=workorder_manifest("b"), check=False)
    assert refused.returncode != 0 and "builds" in refused.stderr, refused.stderr
    assert_no_refusals(operator)


# The agent in a process of its own, so that its KUBECONFIG is the agent's token. Mode
# "suspend" parks the claimed attempt at a waitpoint (receiving its sealed token),
# "finish" reports success.
AGENT_SCRIPT = """
import asyncio, sys
from workgate.agent.client import Agent
from workgate.k8s.api import KubeApi

async def main(namespace, mode):
    async with KubeApi() as api:
        agent = Agent(api, "lint", namespace=namespace, instance="agent-rbac-test")
        for _ in range(100):
            claim = await agent.claim_next()
            if claim is not None:
                break
            await asyncio.sleep(0.2)
        else:
            sys.exit("nothing to claim")
        if mode == "suspend":
            suspension = await claim.suspend("check", ["ok"])
            assert suspension.token
            print("suspended", claim.name, "at", suspension.waitpoint)
        else:
            await claim.succeed()
            print("finished", claim.name)

asyncio.run(main(*sys.argv[1:]))
"""
