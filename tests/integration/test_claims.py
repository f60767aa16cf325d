"""Claims you can trust, against the real API server.

- Fencing: with the API server frozen mid-run, a claimant whose claim is lost stops its
  command before anyone else may start the attempt again. The proof is the command's own
  log (start, heartbeats, end or termination, with times), not the operator's status.
- Authenticated claims: the Lease webhook binds holderIdentity to the authenticated user,
  lets only the holder (or the operator) touch a claim, and requires `claim` on the work
  type; each subject acts with its own ServiceAccount token.
- Unambiguous children: colliding names and a delete-and-recreate under one name.
- Scoped webhooks: a namespace-scoped operator's webhooks leave other namespaces alone,
  and an operator asked to clean up removes its configuration when it stops.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import (
    SHIPPED_ROLES,
    create_workorder,
    finish_build_run,
    get_workorder,
    service_account_kubeconfig,
    shipped_role,
    start_with_webhook,
    wait_for,
    wait_phase,
    workorder,
)
from workgate.agent.client import Agent
from workgate.core.claims import ANNOTATION_RESULT, LeaseView
from workgate.k8s.api import BUILDRUNS, LEASES, WAITPOINTS, Body, KubeApi, load_config
from workgate.k8s.owners import controlled_by

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


# --- helpers -------------------------------------------------------------------------


def embedded_apiserver_pid(kubeconfig: str) -> int:
    """The kube-apiserver of the embedded control plane serving `kubeconfig`."""
    state_dir = str(Path(kubeconfig).resolve().parent).encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        argv = cmdline.split(b"\0")
        if argv and argv[0].endswith(b"kube-apiserver") and state_dir in cmdline:
            return int(proc.name)
    raise AssertionError(
        f"this test freezes the API server, so it needs the embedded control plane; "
        f"none serves KUBECONFIG={kubeconfig}"
    )


def agent_process(
    kubeconfig: str, work_type: str, namespace: str, instance: str, command: list[str]
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workgate.cli.main",
            "agent",
            "--work-type",
            work_type,
            "--namespace",
            namespace,
            "--instance",
            instance,
            "--",
            *command,
        ],
        env={**os.environ, "KUBECONFIG": kubeconfig},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


# The work: logs start, a heartbeat every 0.1 s, and its end (or its termination).
WORK = textwrap.dedent(
    """
    import os, signal, sys, time
    log = open(sys.argv[1], "a", buffering=1)
    me = f"{os.environ['WORKGATE_ATTEMPT']} {os.getpid()}"
    def say(what):
        log.write(f"{time.time():.3f} {me} {what}\\n")
    def term(*_):
        say("terminated"); sys.exit(143)
    signal.signal(signal.SIGTERM, term)
    say("start")
    end = time.time() + float(sys.argv[2])
    while time.time() < end:
        time.sleep(0.1); say("alive")
    say("end")
    """
)


def executions(log: Path) -> dict[str, tuple[float, float, str]]:
    """(first time, last time, last word) of each execution (attempt + pid) in the log."""
    seen: dict[str, tuple[float, float, str]] = {}
    for line in log.read_text().splitlines():
        stamp, attempt, pid, word = line.split()
        key, t = f"{attempt}/{pid}", float(stamp)
        first = seen[key][0] if key in seen else t
        seen[key] = (first, t, word)
    return seen


def the_work(directory: Path) -> tuple[Path, Callable[[int], list[str]]]:
    """WORK written to `directory`: its log, and the command that runs it for N seconds."""
    log, script = directory / "work.log", directory / "work.py"
    script.write_text(WORK)
    return log, lambda seconds: [sys.executable, str(script), str(log), str(seconds)]


async def execution_started(log: Path, what: str) -> None:
    await wait_for(lambda: log.exists() and "start" in log.read_text(), timeout=60, what=what)


# --- fencing ---------------------------------------------------------------------------


async def test_a_lost_claim_stops_its_command_before_the_attempt_runs_again(
    api: KubeApi, namespace: str, kubeconfig: str, start_operator: Any, tmp_path: Path
) -> None:
    """The issue's case: two agents, claimTimeoutSeconds 6, a 20 s command, the API server
    frozen for 10 s five seconds in. Attempt 1's command must be dead before attempt 2's
    starts (renew deadline 4 s + grace 1 s < 6 s), and the WorkOrder still succeeds."""
    pid = embedded_apiserver_pid(kubeconfig)
    start_operator(namespace)
    log, command = the_work(tmp_path)
    agents = [
        agent_process(kubeconfig, "fenced", namespace, f"agent-{i}", command(20)) for i in (1, 2)
    ]
    try:
        await create_workorder(
            api,
            namespace,
            workorder("fenced", "fenced", yaml="{}", claimTimeoutSeconds=6, backoffSeconds=1),
        )
        await execution_started(log, "the first execution to start")
        await asyncio.sleep(5)  # the run is under way, renewing
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(10)
        finally:
            os.kill(pid, signal.SIGCONT)
        wo = await wait_phase(api, namespace, "fenced", "SUCCEEDED", "FAILED", timeout=120)
    finally:
        for agent in agents:
            agent.terminate()
        for agent in agents:
            agent.wait(10)
    assert wo["status"]["phase"] == "SUCCEEDED", wo["status"]
    runs = sorted(executions(log).items(), key=lambda item: item[1][0])
    assert len(runs) >= 2, f"the frozen API server should have cost attempt 1: {runs}"
    first_key, (_, first_last, first_word) = runs[0]
    assert first_key.startswith("1/") and first_word == "terminated", runs
    for (key_a, (_, last_a, _)), (key_b, (start_b, _, _)) in itertools.pairwise(runs):
        assert last_a < start_b, f"{key_a} still ran at {last_a}, after {key_b} began at {start_b}"
    assert runs[-1][1][2] == "end"
    assert first_last < runs[1][1][0]


async def test_a_stopped_agent_stops_its_command_and_hands_the_attempt_back(
    api: KubeApi, namespace: str, kubeconfig: str, start_operator: Any, tmp_path: Path
) -> None:
    """SIGTERM, as a pod's deletion sends: the agent stops its command and reports the
    attempt failed (AgentStopped), so another agent runs the next attempt within seconds,
    not after the claim timeout (an hour here). The command's own log shows attempt 1
    terminated before attempt 2 began."""
    start_operator(namespace)
    log, command = the_work(tmp_path)
    first = agent_process(kubeconfig, "stopped", namespace, "first", command(60))
    second = None
    try:
        await create_workorder(
            api,
            namespace,
            workorder("stopped", "stopped", yaml="{}", claimTimeoutSeconds=3600, backoffSeconds=1),
        )
        await execution_started(log, "attempt 1's command to start")
        first.send_signal(signal.SIGTERM)
        # The second agent's command is short; it can only get attempt 2.
        second = agent_process(kubeconfig, "stopped", namespace, "second", command(1))
        code = await asyncio.to_thread(first.wait, 30)
        wo = await wait_phase(api, namespace, "stopped", "SUCCEEDED", "FAILED", timeout=60)
    finally:
        for agent in (first, second):
            if agent is not None and agent.poll() is None:
                agent.kill()
                agent.wait(10)
    assert first.stderr is not None
    stderr = first.stderr.read().decode()
    assert code == 143, stderr[-2000:]
    assert "where the time went" in stderr, stderr[-2000:]
    assert wo["status"]["phase"] == "SUCCEEDED", wo["status"]
    assert wo["status"]["attempt"] == 2, wo["status"]
    assert wo["status"]["lastErrorReason"] == "AgentStopped", wo["status"]
    runs = sorted(executions(log).items(), key=lambda item: item[1][0])
    assert [(key.split("/")[0], word) for key, (_, _, word) in runs] == [
        ("1", "terminated"),
        ("2", "end"),
    ], runs
    assert runs[0][1][1] < runs[1][1][0], f"attempt 1 still ran after attempt 2 began: {runs}"


async def test_a_release_that_loses_to_a_write_in_between_reads_again_and_releases(
    api: KubeApi, namespace: str, kubectl: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claimant releases its claim with a delete conditional on the version it read. A
    write landing in between (the operator's, a co-tenant's) makes that delete a
    conflict: the claimant reads the Lease again and releases it, instead of leaving it
    to go stale while the next attempt waits (an hour here). No operator runs: the
    WorkOrder is claimable as created."""
    await create_workorder(api, namespace, workorder("handback", "handback", yaml="{}"))
    async with KubeApi(load_config(), transport="http11") as claimant_api:
        claim = await wait_for(
            lambda: Agent(claimant_api, "handback", namespace=namespace).claim_next(),
            what="claim",
        )
        delete_if = claimant_api.delete_if
        interleaved: list[str] = []

        async def after_a_write(path: str, uid: str, resource_version: str | None = None) -> bool:
            if not interleaved:  # once: a real write moves the Lease on after the read
                touched = {"metadata": {"annotations": {"example.com/touched": "yes"}}}
                moved = await api.merge_patch(path, touched)
                interleaved.append(moved["metadata"]["resourceVersion"])
            return await delete_if(path, uid, resource_version)

        monkeypatch.setattr(claimant_api, "delete_if", after_a_write)
        await claim.release()
    assert interleaved, "nothing wrote to the Lease between the read and the delete"
    gone = kubectl("get", "lease", claim.lease.name, "-n", namespace, check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr, gone.stdout


@pytest.mark.parametrize("write", ["report", "renewal"])
async def test_a_claimant_write_that_loses_to_writes_in_between_reads_again_and_lands(
    api: KubeApi, namespace: str, monkeypatch: pytest.MonkeyPatch, write: str
) -> None:
    """A report or a renewal is a patch conditional on the Lease's version. Writes landing
    before it (a renewal's late answer, the operator's) make it a conflict: the claimant
    reads the Lease again and writes that version, as often as it takes (a few times),
    instead of losing the claim: a finished attempt's result dropped (it runs again after
    the claim timeout), or a running command fenced. Two writes here; no operator runs."""
    name = f"{write}-held"
    await create_workorder(api, namespace, workorder(name, name, yaml="{}"))
    async with KubeApi(load_config(), transport="http11") as claimant_api:
        claim = await wait_for(
            lambda: Agent(claimant_api, name, namespace=namespace).claim_next(), what="claim"
        )
        before = claim.lease.renew_time
        merge_patch = claimant_api.merge_patch
        interleaved: list[str] = []

        async def after_writes(path: str, patch: Body) -> Body:
            if len(interleaved) < 2:
                touched = {"metadata": {"annotations": {"example.com/touched": str(interleaved)}}}
                moved = await api.merge_patch(path, touched)  # a real write, before the claimant's
                interleaved.append(moved["metadata"]["resourceVersion"])
            return await merge_patch(path, patch)

        monkeypatch.setattr(claimant_api, "merge_patch", after_writes)
        await (claim.succeed() if write == "report" else claim.renew())
    assert len(interleaved) == 2, "the writes in between did not land before the claimant's"
    assert not claim.lost.is_set()
    lease = await api.get(LEASES.path(namespace, claim.lease.name))
    if write == "report":
        assert lease["metadata"]["annotations"].get(ANNOTATION_RESULT) == "Succeeded", lease
    else:
        renewed = LeaseView.from_body(lease).renew_time
        assert before is not None and renewed is not None and renewed > before, lease


# --- authenticated claims --------------------------------------------------------------


@pytest.fixture
def agent_roles(kubectl: Any) -> None:
    """The shipped ClusterRoles (cluster-wide objects: applying them again changes nothing)."""
    kubectl("apply", "-f", str(SHIPPED_ROLES))


def bind(
    kubectl: Any, namespace: str, account: str, *, clusterrole: str = "", role: str = ""
) -> None:
    target = f"--clusterrole={clusterrole}" if clusterrole else f"--role={role}"
    kubectl(
        "create",
        "rolebinding",
        f"{account}-{clusterrole or role}",
        "-n",
        namespace,
        target,
        f"--serviceaccount={namespace}:{account}",
    )


async def test_only_the_holder_may_touch_a_claim(
    api: KubeApi,
    namespace: str,
    kubectl: Any,
    start_operator: Any,
    tmp_path: Path,
    agent_roles: None,
) -> None:
    await start_with_webhook(start_operator, api, namespace)
    agent_config = service_account_kubeconfig(kubectl, namespace, "agent", tmp_path)
    bind(kubectl, namespace, "agent", clusterrole="workgate-agent")
    # A co-tenant who may write Leases (and read work), but holds no claim.
    intruder_config = service_account_kubeconfig(kubectl, namespace, "intruder", tmp_path)
    bind(kubectl, namespace, "intruder", clusterrole="workgate-agent")
    await create_workorder(api, namespace, workorder("held", "lint", yaml="{}"))
    await wait_phase(api, namespace, "held", "PENDING")

    async with KubeApi(load_config_from(agent_config), transport="http11") as agent_api:
        claim = await wait_for(
            lambda: Agent(agent_api, "lint", namespace=namespace).claim_next(), what="claim"
        )
    lease = await api.get(LEASES.path(namespace, claim.lease.name))
    assert lease["spec"]["holderIdentity"] == f"system:serviceaccount:{namespace}:agent"
    claimed = await wait_phase(api, namespace, "held", "CLAIMED")
    assert claimed["status"]["claimedBy"] == f"system:serviceaccount:{namespace}:agent"

    as_intruder = ["--kubeconfig", intruder_config, "-n", namespace]
    for attempt in (
        ["annotate", "lease", claim.lease.name, "workgate.io/result=Succeeded"],
        [
            "patch",
            "lease",
            claim.lease.name,
            "--type=merge",
            "-p",
            '{"spec":{"renewTime":"2030-01-01T00:00:00.000000Z"}}',
        ],
        [
            "patch",
            "lease",
            claim.lease.name,
            "--type=merge",
            "-p",
            json.dumps({"spec": {"holderIdentity": f"system:serviceaccount:{namespace}:x"}}),
        ],
        ["delete", "lease", claim.lease.name],
    ):
        refused = kubectl(*as_intruder, *attempt, check=False)
        assert refused.returncode != 0 and "claim refused: only the claim's holder" in (
            refused.stderr
        ), (attempt, refused.stdout, refused.stderr)
    # The claim is intact: holder, no outcome, and the WorkOrder still CLAIMED.
    after = await api.get(LEASES.path(namespace, claim.lease.name))
    assert after["spec"]["holderIdentity"] == lease["spec"]["holderIdentity"]
    assert "workgate.io/result" not in (after["metadata"].get("annotations") or {})

    # A claim in someone else's name is refused at creation.
    await create_workorder(api, namespace, workorder("other", "lint", yaml="{}"))
    pending = await wait_phase(api, namespace, "other", "PENDING")
    forged = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": "other-claim",
            "labels": {"app.kubernetes.io/managed-by": "workgate"},
            "annotations": {"workgate.io/attempt": "1"},
            "ownerReferences": [
                {
                    "apiVersion": "workgate.io/v1alpha1",
                    "kind": "WorkOrder",
                    "name": "other",
                    "uid": pending["metadata"]["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": {
            "holderIdentity": f"system:serviceaccount:{namespace}:agent",
            "leaseDurationSeconds": 60,
        },
    }
    refused = kubectl(*as_intruder, "create", "-f", "-", input=json.dumps(forged), check=False)
    assert refused.returncode != 0 and "must be the claimant's own user name" in refused.stderr

    # The holder reports; the operator records it.
    async with KubeApi(load_config_from(agent_config), transport="http11") as agent_api:
        claim.api = agent_api
        await claim.succeed()
    await wait_phase(api, namespace, "held", "SUCCEEDED")


def may_claim(kubectl: Any, namespace: str, user: str, work_type: str) -> bool:
    """RBAC's answer, as the webhook asks it. (`kubectl auth can-i` cannot ask it: it
    resolves resources through discovery, and `worktypes` is not a served resource.)"""
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user,
            "resourceAttributes": {
                "verb": "claim",
                "group": "workgate.io",
                "resource": "worktypes",
                "name": work_type,
                "namespace": namespace,
            },
        },
    }
    answer = kubectl("create", "-o", "json", "-f", "-", input=json.dumps(review))
    return bool(json.loads(answer.stdout)["status"].get("allowed"))


def load_config_from(path: str) -> Any:
    return load_config(path)


async def test_an_agent_may_claim_only_the_work_types_it_is_granted(
    api: KubeApi,
    namespace: str,
    kubectl: Any,
    start_operator: Any,
    tmp_path: Path,
    agent_roles: None,
) -> None:
    await start_with_webhook(start_operator, api, namespace)
    config = service_account_kubeconfig(kubectl, namespace, "linter", tmp_path)
    # The documented narrowing: the agent role's rules, with `claim` for one type only.
    shipped = shipped_role("workgate-agent")
    rules = [
        {**rule, "resourceNames": ["lint"]} if rule["resources"] == ["worktypes"] else rule
        for rule in shipped["rules"]
    ]
    assert rules != shipped["rules"], "the shipped agent role has no worktypes rule"
    narrowed = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "lint-agent", "namespace": namespace},
        "rules": rules,
    }
    kubectl("apply", "-f", "-", input=json.dumps(narrowed))
    bind(kubectl, namespace, "linter", role="lint-agent")
    user = f"system:serviceaccount:{namespace}:linter"
    assert may_claim(kubectl, namespace, user, "lint") and not may_claim(
        kubectl, namespace, user, "deploy"
    )

    await create_workorder(api, namespace, workorder("deploy-it", "deploy", yaml="{}"))
    await create_workorder(api, namespace, workorder("lint-it", "lint", yaml="{}"))
    await wait_phase(api, namespace, "deploy-it", "PENDING")
    await wait_phase(api, namespace, "lint-it", "PENDING")
    async with KubeApi(load_config_from(config), transport="http11") as own:
        assert await Agent(own, "deploy", namespace=namespace).claim_next() is None
        lint = await wait_for(
            lambda: Agent(own, "lint", namespace=namespace).claim_next(), what="lint claim"
        )
        await lint.succeed()
    await wait_phase(api, namespace, "lint-it", "SUCCEEDED")
    deploy = await get_workorder(api, namespace, "deploy-it")
    assert deploy["status"]["phase"] == "PENDING" and not deploy["status"].get("claimedBy")


# --- unambiguous children --------------------------------------------------------------


def gated_build(name: str, key: str) -> Body:
    # The test's one user creates and signals: self-approval must be allowed here.
    gate = {"key": key, "stage": "BeforeExecution", "forbidSelfApproval": False}
    return workorder(name, gates=[gate])


async def signal_gate(kubectl: Any, namespace: str, waitpoint: str) -> None:
    plugin = Path(sys.executable).parent / "kubectl-workgate"
    process = await asyncio.create_subprocess_exec(
        str(plugin),
        "signal",
        waitpoint,
        "go",
        "-n",
        namespace,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()


async def waitpoint_of(api: KubeApi, namespace: str, name: str, owner: Body) -> Body:
    async def probe() -> Body | None:
        wp = await api.get(WAITPOINTS.path(namespace, name))
        ours = controlled_by(wp, owner["metadata"]["uid"])
        return wp if ours and (wp.get("status") or {}).get("state") == "active" else None

    found: Body = await wait_for(probe, timeout=60, what=f"{name} active, owned by its WorkOrder")
    return found


async def build_run_of(api: KubeApi, namespace: str, owner: Body) -> Body:
    async def probe() -> Body | None:
        runs = await api.get(BUILDRUNS.path(namespace))
        mine = [r for r in runs["items"] if controlled_by(r, owner["metadata"]["uid"])]
        return mine[0] if mine else None

    found: Body = await wait_for(probe, timeout=60, what="a BuildRun of this WorkOrder")
    return found


async def test_colliding_names_each_wait_at_their_own_gate(
    api: KubeApi, namespace: str, kubectl: Any, start_operator: Any
) -> None:
    # The webhook records who signals (a gate opens only for a verified sender).
    await start_with_webhook(start_operator, api, namespace)
    first = await create_workorder(api, namespace, gated_build("release", "prod-approval"))
    second = await create_workorder(api, namespace, gated_build("release-prod", "approval"))
    wp_first = await waitpoint_of(api, namespace, "release.prod-approval", first)
    wp_second = await waitpoint_of(api, namespace, "release-prod.approval", second)
    assert wp_first["spec"]["workOrderName"] == "release"
    assert wp_second["spec"]["workOrderName"] == "release-prod"
    # Opening the second one's gate leaves the first waiting.
    await signal_gate(kubectl, namespace, "release-prod.approval")
    run = await build_run_of(api, namespace, second)
    await finish_build_run(api, namespace, run["metadata"]["name"], True)
    await wait_phase(api, namespace, "release-prod", "SUCCEEDED")
    assert (await get_workorder(api, namespace, "release"))["status"]["phase"] == "WAITING"
    await signal_gate(kubectl, namespace, "release.prod-approval")
    run = await build_run_of(api, namespace, first)
    await finish_build_run(api, namespace, run["metadata"]["name"], True)
    await wait_phase(api, namespace, "release", "SUCCEEDED")


async def test_a_recreated_work_order_waits_and_builds_again(
    api: KubeApi, namespace: str, kubectl: Any, start_operator: Any
) -> None:
    # The webhook records who signals (a gate opens only for a verified sender).
    await start_with_webhook(start_operator, api, namespace)
    old = await create_workorder(api, namespace, gated_build("again", "go"))
    await waitpoint_of(api, namespace, "again.go", old)
    await signal_gate(kubectl, namespace, "again.go")
    old_run = await build_run_of(api, namespace, old)
    await finish_build_run(api, namespace, old_run["metadata"]["name"], True)
    await wait_phase(api, namespace, "again", "SUCCEEDED")

    kubectl("delete", "workorder", "again", "-n", namespace, "--wait=false")
    new = await wait_for(
        lambda: create_or_none(api, namespace, gated_build("again", "go")),
        timeout=60,
        what="the WorkOrder recreated under its old name",
    )
    assert new["metadata"]["uid"] != old["metadata"]["uid"]
    # Its own gate, active again (the old, satisfied one is not taken for it) ...
    wp = await waitpoint_of(api, namespace, "again.go", new)
    assert not (wp.get("status") or {}).get("receivedSignals")
    current = await get_workorder(api, namespace, "again")
    assert current["status"]["phase"] == "WAITING", current["status"]
    # ... and its own build once signalled, not the old one's success.
    await signal_gate(kubectl, namespace, "again.go")
    new_run = await build_run_of(api, namespace, new)
    assert new_run["metadata"]["uid"] != old_run["metadata"]["uid"]
    assert (await get_workorder(api, namespace, "again"))["status"]["phase"] == "CLAIMED"
    await finish_build_run(api, namespace, new_run["metadata"]["name"], True)
    await wait_phase(api, namespace, "again", "SUCCEEDED")


async def create_or_none(api: KubeApi, namespace: str, body: Body) -> Body | None:
    from workgate.k8s.api import ApiError

    try:
        return await create_workorder(api, namespace, body)
    except ApiError as exc:
        if exc.conflict:  # the old one is still being deleted
            return None
        raise


async def test_a_squatted_child_name_is_reported_not_retried_in_a_loop(
    api: KubeApi, namespace: str, kubectl: Any, start_operator: Any
) -> None:
    op = start_operator(namespace)
    squatter = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "squat-claim"},
        "spec": {"holderIdentity": "someone-else"},
    }
    kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(squatter))
    await create_workorder(api, namespace, workorder("squat"))

    async def stalled() -> Body | None:
        wo = await get_workorder(api, namespace, "squat")
        conditions = {c["type"]: c for c in (wo.get("status") or {}).get("conditions") or []}
        stall = conditions.get("Stalled")
        return (
            wo if stall and stall["status"] == "True" and stall["reason"] == "NameTaken" else None
        )

    wo = await wait_for(stalled, timeout=30, what="Stalled=True NameTaken")
    assert wo["status"]["phase"] == "PENDING"

    async def name_taken() -> list[Any]:  # Events are sent in the background
        listed = json.loads(kubectl("get", "events", "-n", namespace, "-o", "json").stdout)
        return [e for e in listed["items"] if e["reason"] == "NameTaken"]

    assert await wait_for(name_taken, interval=0.5, what="a NameTaken Event")
    # Not a hot loop: the WorkOrder is not rewritten while it stays blocked.
    version = wo["metadata"]["resourceVersion"]
    await asyncio.sleep(6)  # past one retry period: it looks again, writes nothing
    assert (await get_workorder(api, namespace, "squat"))["metadata"]["resourceVersion"] == version
    assert "Traceback" not in op.log
    # Once the squatter goes, the WorkOrder proceeds.
    kubectl("delete", "lease", "squat-claim", "-n", namespace)
    await wait_phase(api, namespace, "squat", "CLAIMED", timeout=30)


# --- scoped webhooks -------------------------------------------------------------------


@pytest.fixture
def second_namespace(kubectl: Any, namespace: str) -> Iterator[str]:
    other = f"{namespace[:55]}-other"
    kubectl("create", "namespace", other)
    yield other
    kubectl("delete", "namespace", other, "--wait=false", "--ignore-not-found", check=False)


async def test_a_namespace_scoped_operator_webhook_leaves_other_namespaces_alone(
    api: KubeApi, namespace: str, second_namespace: str, kubectl: Any, start_operator: Any
) -> None:
    op = start_operator(namespace, webhook=True)

    async def registered() -> Body | None:
        try:
            return await api.get(
                "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/"
                + op.webhook_config
            )
        except Exception:
            return None

    config = await wait_for(registered, timeout=60, what="the webhook configuration")
    for webhook in config["webhooks"]:
        assert webhook["namespaceSelector"]["matchExpressions"] == [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": [namespace]}
        ], webhook["name"]
    claims = [w for w in config["webhooks"] if "leases" in w["rules"][0]["resources"]]
    assert claims and claims[0]["objectSelector"] == {
        "matchLabels": {"app.kubernetes.io/managed-by": "workgate"}
    }
    # With its server gone (killed: no clean-up), its own namespace fails closed ...
    op.kill()
    manifest = json.dumps(workorder("probe", yaml="{}"))
    blocked = kubectl("create", "-n", namespace, "-f", "-", input=manifest, check=False)
    assert blocked.returncode != 0 and "failed calling webhook" in blocked.stderr
    # ... and every other namespace is untouched by it.
    kubectl("create", "-n", second_namespace, "-f", "-", input=manifest)


async def test_an_operator_that_cleans_up_leaves_no_webhook_behind(
    api: KubeApi, namespace: str, kubectl: Any, start_operator: Any
) -> None:
    op = start_operator(namespace, webhook=True, WORKGATE_WEBHOOK_CLEANUP="on")
    path = (
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/" + op.webhook_config
    )

    async def registered() -> bool:
        try:
            await api.get(path)
            return True
        except Exception:
            return False

    await wait_for(registered, timeout=60, what="the webhook configuration")
    assert op.proc is not None
    op.proc.send_signal(signal.SIGINT)  # as Ctrl-C stops `workgate up`
    op.proc.wait(30)
    assert not await registered(), "the webhook configuration outlived the operator"
    created = kubectl(
        "create",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps(workorder("after", yaml="{}")),
        check=False,
    )
    assert created.returncode == 0, created.stderr
