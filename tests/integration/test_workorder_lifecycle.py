"""WorkOrder lifecycle against the real API server, with the real operator process."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import (
    OperatorProcess,
    create_workorder,
    finish_build_run,
    free_port,
    get_workorder,
    list_items,
    scrape_metrics,
    service_account_kubeconfig,
    wait_for,
    wait_phase,
    workorder,
)
from tests.integration.evidence import Seen, ShipwrightStandIn, WatchRecorder, owner_name
from workgate.agent.client import Agent, whoami
from workgate.api.common import parse_time
from workgate.core.claims import ANNOTATION_ATTEMPT
from workgate.k8s.api import (
    BUILDRUNS,
    BUILDS,
    EVENTS,
    LEASES,
    WORKORDERS,
    ApiError,
    Body,
    KubeApi,
)

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


async def build_run(api: KubeApi, namespace: str, name: str) -> Any:
    return await wait_for(lambda: api.get(BUILDRUNS.path(namespace, name)), what=f"BuildRun {name}")


async def test_success_path_with_kubectl(
    api: KubeApi, namespace: str, kubectl: Any, start_operator: Any
) -> None:
    start_operator(namespace)
    manifest = (REPO / "examples" / "build-workorder.yaml").read_text()
    applied = yaml.safe_load(manifest)
    kubectl("apply", "-n", namespace, "-f", str(REPO / "examples" / "build-workorder.yaml"))
    name = applied["metadata"]["name"]

    claimed = await wait_phase(api, namespace, name, "CLAIMED")
    # The claimant is the operator's authenticated user, not a name it chose for itself.
    me = kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").stdout
    assert me and claimed["status"]["claimedBy"] == me
    assert claimed["status"]["attempt"] == 1
    run = await build_run(api, namespace, f"{name}-a1")
    assert run["spec"]["build"]["name"] == "sample-go"
    assert run["metadata"]["ownerReferences"][0]["uid"] == claimed["metadata"]["uid"]
    lease = await api.get(LEASES.path(namespace, f"{name}-claim"))
    assert lease["spec"]["holderIdentity"] == me
    assert lease["spec"]["leaseDurationSeconds"] == 3600
    build = await api.get(BUILDS.path(namespace, "sample-go"))
    assert build["spec"]["output"]["image"] == "registry.example.com/team/sample-go:latest"

    await finish_build_run(api, namespace, f"{name}-a1", succeeded=True)
    kubectl("wait", "-n", namespace, "--for=condition=Succeeded", f"wo/{name}", "--timeout=30s")
    done = await get_workorder(api, namespace, name)
    assert done["status"]["phase"] == "SUCCEEDED"
    conditions = {c["type"]: c for c in done["status"]["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Ready"]["observedGeneration"] == 1
    # kstatus's abnormal-true conditions are absent when False: nothing reconciling, stalled.
    assert "Reconciling" not in conditions and "Stalled" not in conditions
    # The operator never touches spec or metadata: GitOps sees no drift.
    assert done["metadata"]["generation"] == 1
    assert done["spec"] == {**applied["spec"]}
    assert not done["metadata"].get("finalizers")
    assert set(done["metadata"].get("annotations", {})) <= {
        "kubectl.kubernetes.io/last-applied-configuration"
    }
    # The attempt's Lease stays as its record (as a Job keeps its Pods): who held it, for
    # which attempt, owned by this WorkOrder, so it goes with it.
    record = await api.get(LEASES.path(namespace, f"{name}-claim"))
    assert record["metadata"]["uid"] == lease["metadata"]["uid"]
    assert record["metadata"]["annotations"]["workgate.io/attempt"] == "1"
    assert record["metadata"]["ownerReferences"][0]["uid"] == done["metadata"]["uid"]
    # Events are sent in the background (k8s/events.py): wait for them.
    events = await wait_for(
        lambda: list_items(
            api, EVENTS.path(namespace), fieldSelector=f"involvedObject.name={name}"
        ),
        what="the WorkOrder's Events",
    )
    # One Event for the build: the operator's own claim is in status and the Lease
    assert [e["reason"] for e in events] == ["Succeeded"]
    table = kubectl("get", "wo", "-n", namespace).stdout
    assert table.split()[:7] == [
        "NAME",
        "PHASE",
        "TYPE",
        "RETRIES",
        "WAITING-ON",
        "CLAIMED-BY",
        "NEXT-RETRY",
    ]
    assert "SUCCEEDED" in table


async def _absent(api: KubeApi, path: str) -> bool:
    try:
        await api.get(path)
    except ApiError as exc:
        if exc.not_found:
            return True
        raise
    return False


# How late a retry may start after its nextRetryAfter. The operator wakes on a timer set
# to that moment (measured: 1-3 ms late on this 2-core machine at load average 11). The
# bound leaves room for a stalled operator process on a CI runner shared with other
# suites, and still fails a retry that waited for something other than its timer (the
# backoff itself is checked exactly, from nextRetryAfter - lastErrorAt).
RETRY_LATENESS_BOUND = 5.0


async def test_failures_retry_with_exponential_backoff_then_fail(
    api: KubeApi, namespace: str, start_operator: Any
) -> None:
    start_operator(namespace)
    lateness = []
    # Every status the WorkOrder goes through, from a watch: RETRY_PENDING lasts only the
    # backoff (1-2 s), too short to be sure to catch by polling on a busy machine.
    async with WatchRecorder(api, WORKORDERS.path(namespace)) as history:
        await create_workorder(api, namespace, workorder("flaky", maxRetries=2, backoffSeconds=1))
        for attempt in (1, 2, 3):
            await build_run(api, namespace, f"flaky-a{attempt}")
            await finish_build_run(
                api,
                namespace,
                f"flaky-a{attempt}",
                succeeded=False,
                reason="BuildRunTimeout",
                message=f"attempt {attempt} timed out",
            )
            if attempt == 3:
                break
            claimed = await wait_for(
                lambda n=attempt + 1: _claimed_attempt(api, namespace, "flaky", n),
                what=f"attempt {attempt + 1} claimed",
            )
            await history.caught_up()
            st = next(
                e.body["status"]
                for e in history.of("MODIFIED")
                if e.body["status"].get("phase") == "RETRY_PENDING"
                and e.body["status"]["retryCount"] == attempt
            )
            assert st["lastErrorReason"] == "BuildRunTimeout"
            failed_at = parse_time(st["lastErrorAt"])
            retry_at = parse_time(st["nextRetryAfter"])
            assert failed_at is not None and retry_at is not None
            # backoffSeconds * 2^retryCount, retry count from 0
            assert abs((retry_at - failed_at).total_seconds() - 2 ** (attempt - 1)) < 0.01
            claimed_at = parse_time(claimed["status"]["claimedAt"])
            assert claimed_at is not None
            lateness.append((claimed_at - retry_at).total_seconds())
            # The API server's own stamp (whole seconds) on the retry's BuildRun agrees:
            # not created before its time.
            run = await build_run(api, namespace, f"flaky-a{attempt + 1}")
            created = parse_time(run["metadata"]["creationTimestamp"])
            assert created is not None and created >= retry_at.replace(microsecond=0)
        final = await wait_phase(api, namespace, "flaky", "FAILED")
    st = final["status"]
    assert st["retryCount"] == 2 and st["attempt"] == 3
    assert st["lastError"] == "BuildRun flaky-a3: attempt 3 timed out"
    assert {c["type"]: c["status"] for c in st["conditions"]}["Stalled"] == "True"
    # The retry fires at nextRetryAfter, never before it (a real property: exact), and
    # soon after it (a bound for a busy machine, see RETRY_LATENESS_BOUND).
    assert all(0 <= late < RETRY_LATENESS_BOUND for late in lateness), lateness
    runs = await list_items(api, BUILDRUNS.path(namespace))
    assert sorted(r["metadata"]["name"] for r in runs) == ["flaky-a1", "flaky-a2", "flaky-a3"]


async def _claimed_attempt(api: KubeApi, namespace: str, name: str, attempt: int) -> Body | None:
    wo = await get_workorder(api, namespace, name)
    st = wo.get("status") or {}
    return wo if st.get("attempt") == attempt and st.get("claimedAt") else None


@pytest.mark.parametrize(
    ("case", "yaml_content", "reason"),
    [
        (
            "malformed",
            "apiVersion: shipwright.io/v1beta1\nkind: Build\nmetadata: [unclosed",
            "InvalidYAML",
        ),
        (
            "secret",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: stolen}\nstringData: {a: b}\n",
            "ForbiddenKind",
        ),
        (
            "clusterrole",
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: root}\n",
            "ForbiddenKind",
        ),
        (
            "elsewhere",
            "apiVersion: shipwright.io/v1beta1\nkind: Build\nmetadata: {name: b, namespace: kube-system}\nspec: {}\n",
            "ForeignNamespace",
        ),
        (
            "bomb",
            "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n",
            "InvalidYAML",
        ),
        (
            "owned",
            "apiVersion: shipwright.io/v1beta1\nkind: Build\nmetadata:\n  name: b\n  ownerReferences: [{apiVersion: v1, kind: Namespace, name: kube-system, uid: x}]\nspec: {}\n",
            "InvalidManifest",
        ),
        (
            "two-builds",
            "apiVersion: shipwright.io/v1beta1\nkind: Build\nmetadata: {name: b1}\nspec: {}\n---\napiVersion: shipwright.io/v1beta1\nkind: Build\nmetadata: {name: b2}\nspec: {}\n",
            "InvalidManifest",
        ),
    ],
)
async def test_forbidden_input_fails_at_once_and_applies_nothing(
    api: KubeApi, namespace: str, start_operator: Any, case: str, yaml_content: str, reason: str
) -> None:
    start_operator(namespace)
    await create_workorder(api, namespace, workorder(case, yaml=yaml_content, maxRetries=3))
    failed = await wait_phase(api, namespace, case, "FAILED")
    assert failed["status"]["lastErrorReason"] == reason
    assert failed["status"]["retryCount"] == 0
    events = await wait_for(lambda: _events(api, namespace, case, reason), what=f"{reason} event")
    assert events[0]["type"] == "Warning"
    assert await list_items(api, BUILDS.path(namespace)) == []
    assert await list_items(api, BUILDRUNS.path(namespace)) == []
    secrets = await list_items(api, f"/api/v1/namespaces/{namespace}/secrets")
    assert [s for s in secrets if s["metadata"]["name"] == "stolen"] == []
    with pytest.raises(ApiError) as err:
        await api.get("/apis/rbac.authorization.k8s.io/v1/clusterroles/root")
    assert err.value.not_found


async def _events(api: KubeApi, namespace: str, name: str, reason: str) -> list[Any]:
    events = await list_items(
        api, EVENTS.path(namespace), fieldSelector=f"involvedObject.name={name}"
    )
    return [e for e in events if e["reason"] == reason]


def test_oversized_and_invalid_specs_are_refused_at_admission(namespace: str, kubectl: Any) -> None:
    huge = workorder("huge", yaml="x" * (256 * 1024 + 1))
    result = kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(huge), check=False)
    assert result.returncode != 0 and "spec.yamlContent" in result.stderr
    bad = workorder("bad", maxRetries=-1)
    del bad["spec"]["workType"]
    result = kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(bad), check=False)
    assert result.returncode != 0
    assert "spec.maxRetries" in result.stderr and "spec.workType" in result.stderr


async def test_deleting_a_claimed_work_order_releases_its_claim(
    api: KubeApi, namespace: str, start_operator: Any
) -> None:
    start_operator(namespace)
    await create_workorder(api, namespace, workorder("doomed"))
    await build_run(api, namespace, "doomed-a1")
    await api.request(
        "DELETE", WORKORDERS.path(namespace, "doomed"), body={"propagationPolicy": "Foreground"}
    )
    # The garbage collector removes the owned Lease, Build and BuildRun.
    for path in (
        LEASES.path(namespace, "doomed-claim"),
        BUILDRUNS.path(namespace, "doomed-a1"),
        BUILDS.path(namespace, "doomed-build"),
        WORKORDERS.path(namespace, "doomed"),
    ):
        await wait_for(lambda p=path: _absent(api, p), timeout=90, what=f"{path} collected")


def _agent(
    kubeconfig: str, work_type: str, namespace: str, identity: str, *command: str
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
            identity,
            "--once",
            "--",
            *command,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_killed_agent_times_out_and_a_second_agent_completes(
    api: KubeApi, namespace: str, kubeconfig: str, start_operator: Any
) -> None:
    start_operator(namespace)
    timeout = 4  # the agent renews every third of it: it must stall 2.7 s to lose its claim
    await create_workorder(
        api,
        namespace,
        workorder(
            "tests", "test", yaml="suite: unit\n", claimTimeoutSeconds=timeout, backoffSeconds=1
        ),
    )
    first = _agent(kubeconfig, "test", namespace, "agent-one", "sleep", "60")
    try:
        claimed = await wait_phase(api, namespace, "tests", "CLAIMED")
        assert claimed["status"]["claimedBy"] == await whoami(api)  # verified, not self-named

        async def renewed_past_the_timeout() -> bool:
            lease = await api.get(LEASES.path(namespace, "tests-claim"))
            acquired = parse_time(lease["spec"]["acquireTime"])
            renewed = parse_time(lease["spec"]["renewTime"])
            assert acquired is not None and renewed is not None
            return (renewed - acquired).total_seconds() > timeout

        # Renewals keep the claim alive past its timeout: the same attempt, never retried.
        await wait_for(renewed_past_the_timeout, what="renewals past the claim timeout")
        held = (await get_workorder(api, namespace, "tests"))["status"]
        assert (held["phase"], held["attempt"], held.get("retryCount", 0)) == ("CLAIMED", 1, 0)
        first.kill()
        first.wait(5)
        retrying = await wait_for(
            lambda: _timed_out(api, namespace, "tests"), what="the claim timed out"
        )
        assert "agent-one" in retrying["status"]["lastError"]
        second = _agent(
            kubeconfig,
            "test",
            namespace,
            "agent-two",
            sys.executable,
            "-c",
            "import sys; assert sys.stdin.read() == 'suite: unit\\n'",
        )
        done = await wait_phase(api, namespace, "tests", "SUCCEEDED")
        assert second.wait(10) == 0
        assert done["status"]["retryCount"] == 1 and done["status"]["attempt"] == 2

        async def both_claims() -> list[str] | None:  # Events are sent in the background
            events = await list_items(
                api, EVENTS.path(namespace), fieldSelector="involvedObject.name=tests"
            )
            # (a claim reported within a second is told in its outcome's Event)
            claims = [e["message"] for e in events if "claimed by" in e["message"]]
            return claims if len(claims) >= 2 else None

        claims = await wait_for(both_claims, what="both claims' Events")
        assert any("agent-two" in m for m in claims) and any("agent-one" in m for m in claims)
    finally:
        first.kill()


async def _timed_out(api: KubeApi, namespace: str, name: str) -> Body | None:
    """After the first claim timed out: retry 1 scheduled (or already due) for that reason."""
    wo = await get_workorder(api, namespace, name)
    st = wo.get("status") or {}
    timed_out = st.get("lastErrorReason") == "ClaimTimedOut" and st.get("retryCount") == 1
    return wo if timed_out and st.get("phase") in ("RETRY_PENDING", "PENDING") else None


async def test_agent_reported_failure_becomes_last_error(
    api: KubeApi, namespace: str, kubeconfig: str, start_operator: Any
) -> None:
    start_operator(namespace)
    await create_workorder(
        api, namespace, workorder("backup", "backup", yaml="db: main\n", maxRetries=0)
    )
    agent = _agent(
        kubeconfig,
        "backup",
        namespace,
        "agent-b",
        sys.executable,
        "-c",
        "import sys; sys.stderr.write('disk full'); sys.exit(3)",
    )
    failed = await wait_phase(api, namespace, "backup", "FAILED", timeout=20)
    assert agent.wait(10) == 0
    assert failed["status"]["lastError"] == "disk full"
    assert failed["status"]["lastErrorReason"] == "CommandFailed"


async def test_twenty_agents_racing_for_two_hundred_work_orders(
    api: KubeApi, namespace: str, kubeconfig: str, start_operator: Any
) -> None:
    start_operator(namespace)
    total = 200
    await asyncio.gather(
        *(
            create_workorder(api, namespace, workorder(f"job-{i:03d}", "race", yaml=f"n: {i}\n"))
            for i in range(total)
        )
    )
    executions: Counter[tuple[str, int]] = Counter()
    done = asyncio.Event()

    async def run_agent(index: int) -> None:
        async with KubeApi() as own_api:
            agent = Agent(own_api, "race", namespace=namespace, instance=f"racer-{index}")
            while not done.is_set():  # not "idle for 3 s": a slow operator is not the end
                claim = await agent.claim_next()
                if claim is None:
                    await asyncio.sleep(0.1 * random.random())
                    continue
                executions[(claim.name, claim.attempt)] += 1
                await claim.succeed()

    async def all_succeeded() -> bool:
        items = await list_items(api, WORKORDERS.path(namespace))
        return len(items) == total and all(
            (wo.get("status") or {}).get("phase") == "SUCCEEDED" for wo in items
        )

    agents = asyncio.gather(*(run_agent(i) for i in range(20)))
    try:
        await wait_for(all_succeeded, timeout=240, interval=0.5, what="all SUCCEEDED")
    finally:
        done.set()
        await asyncio.wait_for(agents, timeout=60)
    items = await list_items(api, WORKORDERS.path(namespace))
    phases = Counter(wo["status"]["phase"] for wo in items)
    assert phases == {"SUCCEEDED": total}
    assert len(executions) == total
    assert max(executions.values()) == 1, [k for k, v in executions.items() if v > 1]
    assert {wo["status"]["attempt"] for wo in items} == {1}


async def test_operator_killed_at_random_points_converges(
    api: KubeApi, namespace: str, start_operator: Any
) -> None:
    """100 WorkOrders; the operator is SIGKILLed and restarted at random moments while a
    Shipwright stand-in finishes BuildRuns (every 4th WorkOrder's first attempt fails).

    Executions are counted from the test's own watch of BuildRuns (every creation, with
    its uid), not from the operator's status, and ordered by resourceVersion."""
    op: OperatorProcess = start_operator(namespace, WORKGATE_WORKERS="4")
    total = 100
    for i in range(total):
        spec: dict[str, Any] = {"backoffSeconds": 1, "maxRetries": 1 if i % 8 else 0}
        await create_workorder(api, namespace, workorder(f"wo-{i:03d}", **spec))

    def succeeds(run: Body) -> bool:
        index = int(run["metadata"]["name"][3:6])
        return not (index % 4 == 0 and run["metadata"]["annotations"][ANNOTATION_ATTEMPT] == "1")

    rng = random.Random(7)
    kills = mid_flight = 0
    async with (
        WatchRecorder(api, BUILDRUNS.path(namespace)) as runs,
        ShipwrightStandIn(api, namespace, runs, succeeds) as shipwright,
    ):
        while kills < 8:
            await asyncio.sleep(rng.uniform(0.2, 1.5))
            items = await list_items(api, WORKORDERS.path(namespace))
            mid_flight += any(
                (wo.get("status") or {}).get("phase") not in ("SUCCEEDED", "FAILED") for wo in items
            )
            # Each kill hits a running operator: one that crashed on its own (and was merely
            # restarted here) would fail this, not pass silently.
            assert op.proc is not None and op.proc.poll() is None, op.log[-4000:]
            op.kill()
            assert op.proc.returncode == -signal.SIGKILL
            kills += 1
            op.start()

        async def all_terminal() -> bool:
            items = await list_items(api, WORKORDERS.path(namespace))
            return len(items) == total and all(
                (wo.get("status") or {}).get("phase") in ("SUCCEEDED", "FAILED") for wo in items
            )

        await wait_for(all_terminal, timeout=180, interval=0.5, what="all WorkOrders terminal")
        await runs.caught_up()
        created_before_the_end = len(runs.added())
        # One more restart once everything is terminal: a fresh operator re-lists all 100,
        # the moment a stale view would start an attempt again. Wait until its metrics say
        # it has looked at every one of them, then look for BuildRuns created since.
        assert op.proc is not None and op.proc.poll() is None, op.log[-4000:]
        op.kill()
        op.env["WORKGATE_METRICS_PORT"] = str(free_port())
        op.start()
        await wait_for(
            lambda: _reconciled_all(op, total), timeout=60, what="the restart reconciled all"
        )
        await runs.caught_up()
        shipwright.check()
    after_the_end = [e.name for e in runs.added()[created_before_the_end:]]
    assert after_the_end == [], "BuildRuns created after every WorkOrder was terminal"
    items = {wo["metadata"]["name"]: wo for wo in await list_items(api, WORKORDERS.path(namespace))}
    created: dict[str, list[Seen]] = {}
    for seen in runs.added():
        created.setdefault(owner_name(seen.body) or "", []).append(seen)
    assert runs.of("DELETED") == []
    for i in range(total):
        name = f"wo-{i:03d}"
        st = items[name]["status"]
        if i % 4:
            expected = ("SUCCEEDED", 1)
        elif i % 8:
            expected = ("SUCCEEDED", 2)
        else:
            expected = ("FAILED", 1)
        assert (st["phase"], st["attempt"]) == expected, (i, st)
        assert st["attempt"] == st["retryCount"] + 1, (i, st)
        # Every BuildRun ever created for it (a re-created one has a second uid), one per
        # attempt the status records, in order, each finished by the stand-in exactly once.
        attempts = sorted(created.get(name, []), key=lambda e: e.resource_version)
        assert [e.name for e in attempts] == [
            f"{name}-a{n}" for n in range(1, st["attempt"] + 1)
        ], (name, [(e.name, e.uid) for e in attempts])
        assert all(shipwright.finished.get(e.uid) for e in attempts), name
        # No overlap: attempt n+1's BuildRun was created only after attempt n's had finished.
        for previous, following in itertools.pairwise(attempts):
            assert following.resource_version > shipwright.finished[previous.uid], name
    assert mid_flight >= 4, "most kills must land while WorkOrders are still in flight"
    # What Leases remain are records: one per SUCCEEDED WorkOrder, of its last attempt,
    # owned by that very WorkOrder; a FAILED one's claims were all released.
    leases = {
        lease["metadata"]["ownerReferences"][0]["uid"]: lease
        for lease in await list_items(api, LEASES.path(namespace))
    }
    succeeded = {
        wo["metadata"]["uid"]: wo for wo in items.values() if wo["status"]["phase"] == "SUCCEEDED"
    }
    assert set(leases) == set(succeeded)
    for uid, lease in leases.items():
        attempt = lease["metadata"]["annotations"][ANNOTATION_ATTEMPT]
        assert attempt == str(succeeded[uid]["status"]["attempt"]), lease["metadata"]["name"]


async def _reconciled_all(op: OperatorProcess, total: int) -> bool:
    """The operator's own metrics, used only to know when to look: it has cached every
    WorkOrder as terminal and run at least that many reconciles."""
    port = op.env["WORKGATE_METRICS_PORT"]
    try:
        text = await asyncio.to_thread(scrape_metrics, f"http://127.0.0.1:{port}/metrics")
    except OSError:
        return False
    terminal = reconciles = 0.0
    for line in text.splitlines():
        if line.startswith("workgate_workorders{") and (
            'phase="SUCCEEDED"' in line or 'phase="FAILED"' in line
        ):
            terminal += float(line.rsplit(" ", 1)[1])
        if line.startswith('workgate_reconcile_duration_seconds_count{kind="workorder"}'):
            reconciles = float(line.rsplit(" ", 1)[1])
    return terminal == total and reconciles >= total


async def test_a_work_order_cannot_create_what_its_author_cannot(
    api: KubeApi, namespace: str, kubectl: Any, start_operator: Any, tmp_path: Path
) -> None:
    op = start_operator(namespace, webhook=True)
    path = (
        f"/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{op.webhook_config}"
    )
    await wait_for(lambda: api.get(path), what="webhook registered")
    author = service_account_kubeconfig(kubectl, namespace, "author", tmp_path)
    builder = service_account_kubeconfig(kubectl, namespace, "builder", tmp_path)
    kubectl(
        "create",
        "role",
        "wo-author",
        "--verb=create,get",
        "--resource=workorders.workgate.io",
        "-n",
        namespace,
    )
    kubectl(
        "create",
        "role",
        "build-author",
        "--verb=create,patch",
        "--resource=builds.shipwright.io",
        "-n",
        namespace,
    )
    for sa in ("author", "builder"):
        kubectl(
            "create",
            "rolebinding",
            f"{sa}-wo",
            "--role=wo-author",
            f"--serviceaccount={namespace}:{sa}",
            "-n",
            namespace,
        )
    kubectl(
        "create",
        "rolebinding",
        "builder-builds",
        "--role=build-author",
        f"--serviceaccount={namespace}:builder",
        "-n",
        namespace,
    )

    def apply_as(kubeconfig: str, name: str) -> Any:
        return subprocess.run(
            ["kubectl", "--kubeconfig", kubeconfig, "create", "-n", namespace, "-f", "-"],
            input=json.dumps(workorder(name)),
            capture_output=True,
            text=True,
            check=False,
        )

    refused = apply_as(author, "sneaky")
    assert refused.returncode != 0
    assert (
        f"system:serviceaccount:{namespace}:author may not create builds.shipwright.io"
        in refused.stderr
    )
    accepted = apply_as(builder, "honest")
    assert accepted.returncode == 0, accepted.stderr
    await build_run(api, namespace, "honest-a1")
    # Malformed embedded YAML is refused at admission too, with the field named.
    bad = kubectl(
        "create",
        "-n",
        namespace,
        "-f",
        "-",
        check=False,
        input=json.dumps(workorder("broken", yaml="kind: [")),
    )
    assert bad.returncode != 0 and "spec.yamlContent: InvalidYAML" in bad.stderr
