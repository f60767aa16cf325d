"""Waitpoints and signals against the real API server, with the webhook served to it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import (
    create_workorder,
    finish_build_run,
    get_workorder,
    list_items,
    service_account_kubeconfig,
    shipped_role,
    start_with_webhook,
    wait_for,
    wait_phase,
    workorder,
)
from workgate.agent.client import Agent
from workgate.cli.kubectl_plugin import build_signal, identity, whoami
from workgate.core.signals import recipient_keypair
from workgate.k8s.api import (
    BUILDRUNS,
    LEASES,
    SECRETS,
    SIGNALS,
    WAITPOINTS,
    ApiError,
    Body,
    KubeApi,
)
from workgate.operator.waitpoints import NAME_TAKEN_RECHECK_SECONDS

pytestmark = pytest.mark.integration
BIN = str(Path(sys.executable).parent)  # kubectl finds the kubectl-workgate plugin here


def plugin(*args: str, kubeconfig: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{os.environ['PATH']}:{BIN}"}
    if kubeconfig:
        env["KUBECONFIG"] = kubeconfig
    return subprocess.run(["kubectl", "workgate", *args], capture_output=True, text=True, env=env)


def gate(key: str, stage: str = "BeforeExecution", *required: str, **extra: Any) -> dict[str, Any]:
    """A gate the test's own (admin) identity may open: these tests are about signals, not
    separation of duties (test_approvals.py is)."""
    return {
        "key": key,
        "stage": stage,
        "requiredSignalNames": list(required),
        "forbidSelfApproval": False,
        **extra,
    }


async def waitpoint(api: KubeApi, namespace: str, name: str) -> Body:
    return await api.get(WAITPOINTS.path(namespace, name))


async def wait_wp(api: KubeApi, namespace: str, name: str, state: str) -> Body:
    async def probe() -> Body | None:
        wp = await waitpoint(api, namespace, name)
        return wp if (wp.get("status") or {}).get("state") == state else None

    result: Body = await wait_for(probe, what=f"{name} {state}")
    return result


async def wait_waiting_on(api: KubeApi, namespace: str, name: str, gates: str) -> Body:
    async def probe() -> Body | None:
        wo = await get_workorder(api, namespace, name)
        return wo if (wo.get("status") or {}).get("waitingOn") == gates else None

    result: Body = await wait_for(probe, what=f"{name} waiting on {gates}")
    return result


async def token_of(api: KubeApi, namespace: str, wp_name: str) -> str:
    wp = await wait_for(lambda: _with_secret(api, namespace, wp_name), what="token secret")
    secret = await api.get(SECRETS.path(namespace, wp["status"]["tokenSecretName"]))
    return base64.b64decode(secret["data"]["token"]).decode()


async def _with_secret(api: KubeApi, namespace: str, name: str) -> Body | None:
    wp = await waitpoint(api, namespace, name)
    return wp if (wp.get("status") or {}).get("tokenSecretName") else None


def signal(kubectl: Any, namespace: str, wp: str, name: str, payload: str = "") -> str:
    # The plugin polls until the controller judges the Signal; its 10 s default is a guess
    # that a busy machine can miss (the outcome is then "Pending"), so allow more.
    result = plugin("signal", wp, name, "-n", namespace, "--payload", payload, "--timeout", "60")
    assert result.returncode == 0, result.stderr
    return result.stdout


async def test_pre_execution_gate_waits_then_runs_to_success(
    api: KubeApi, namespace: str, kubectl: Any, start_operator: Any
) -> None:
    await start_with_webhook(start_operator, api, namespace)
    await create_workorder(
        api, namespace, workorder("rel", gates=[gate("approval", "BeforeExecution", "approve")])
    )
    waiting = await wait_phase(api, namespace, "rel", "WAITING")
    assert waiting["status"]["waitingOn"] == "approval"
    await wait_wp(api, namespace, "rel.approval", "active")
    listed = kubectl("get", "wp", "-n", namespace, "-l", "workgate.io/workorder=rel").stdout
    assert "rel.approval" in listed and "active" in listed and '["approve"]' in listed
    pending = plugin("pending", "rel", "-n", namespace)
    assert pending.returncode == 0 and "approval" in pending.stdout
    assert await list_items(api, BUILDRUNS.path(namespace)) == []
    assert await list_items(api, LEASES.path(namespace)) == []

    out = signal(kubectl, namespace, "rel.approval", "approve", payload="ship it")
    assert "Accepted" in out
    await wait_for(lambda: api.get(BUILDRUNS.path(namespace, "rel-a1")), what="BuildRun")
    await finish_build_run(api, namespace, "rel-a1", succeeded=True)
    await wait_phase(api, namespace, "rel", "SUCCEEDED")
    wp = await waitpoint(api, namespace, "rel.approval")
    st = wp["status"]
    assert st["state"] == "closed" and st["closeReason"] == "Satisfied"
    assert st["createdAt"] and st["activatedAt"] and st["closedAt"]
    [received] = st["receivedSignals"]
    assert received["name"] == "approve"
    assert received["sender"] == await whoami(api)
    assert received["payloadDigest"] == hashlib.sha256(b"ship it").hexdigest()


async def test_wildcard_multi_signal_buffering_and_independent_waitpoints(
    api: KubeApi, namespace: str, kubectl: Any, start_operator: Any
) -> None:
    await start_with_webhook(start_operator, api, namespace)
    gates = [
        gate("anyone"),  # wildcard: any one signal
        gate("both", "BeforeExecution", "qa", "security"),
        gate("verify", "AfterSuccess", "smoke"),
    ]
    await create_workorder(
        api, namespace, workorder("multi", "deploy", yaml="app: web\n", gates=gates)
    )
    waiting = await wait_phase(api, namespace, "multi", "WAITING")
    assert waiting["status"]["waitingOn"] == "anyone,both"
    await wait_wp(api, namespace, "multi.anyone", "active")
    await wait_wp(api, namespace, "multi.both", "active")
    assert (await waitpoint(api, namespace, "multi.verify"))["status"]["state"] == "pending"

    # Buffered: the AfterSuccess gate is still pending.
    assert "buffered" in signal(kubectl, namespace, "multi.verify", "smoke")
    buffered = await waitpoint(api, namespace, "multi.verify")
    assert buffered["status"]["state"] == "pending" and buffered["status"]["receivedCount"] == 1

    signal(kubectl, namespace, "multi.both", "qa")
    assert (await waitpoint(api, namespace, "multi.both"))["status"]["state"] == "active"
    signal(kubectl, namespace, "multi.anyone", "whatever")
    await wait_wp(api, namespace, "multi.anyone", "closed")
    # The WorkOrder follows the close in a reconcile of its own: wait for it, then check
    # that it still waits (had the wildcard released both gates, waitingOn would be empty).
    still = await wait_waiting_on(api, namespace, "multi", "both")
    assert still["status"]["phase"] == "WAITING"
    signal(kubectl, namespace, "multi.both", "security")
    await wait_phase(api, namespace, "multi", "PENDING")

    async with KubeApi() as agent_api:
        claim = await wait_for(
            lambda: Agent(agent_api, "deploy", namespace=namespace).claim_next(), what="claim"
        )
        await claim.succeed()
    # The buffered signal satisfies the AfterSuccess gate the moment it activates.
    done = await wait_phase(api, namespace, "multi", "SUCCEEDED")
    assert done["status"]["waitingStage"] == "AfterSuccess"
    verify = await waitpoint(api, namespace, "multi.verify")
    assert verify["status"]["closeReason"] == "Satisfied" and verify["status"]["activatedAt"]


async def test_expiry_follows_the_timeout_policy(
    api: KubeApi, namespace: str, start_operator: Any
) -> None:
    start_operator(namespace)
    fail = [gate("g", "BeforeExecution", "approve", timeoutSeconds=1, onTimeout="Fail")]
    cont = [gate("g", "BeforeExecution", "approve", timeoutSeconds=1, onTimeout="Continue")]
    await create_workorder(api, namespace, workorder("strict", "deploy", yaml="a: 1\n", gates=fail))
    await create_workorder(
        api, namespace, workorder("lenient", "deploy", yaml="a: 1\n", gates=cont)
    )
    failed = await wait_phase(api, namespace, "strict", "FAILED")
    assert failed["status"]["lastErrorReason"] == "WaitpointExpired"
    moved_on = await wait_phase(api, namespace, "lenient", "PENDING")
    assert moved_on["status"]["waitingStage"] == "BeforeExecution"
    for name in ("strict.g", "lenient.g"):
        st = (await waitpoint(api, namespace, name))["status"]
        assert st["closeReason"] == "Expired" and st["expiresAt"] <= st["closedAt"]


def _apply(kubectl: Any, namespace: str, body: Body) -> subprocess.CompletedProcess[str]:
    result: subprocess.CompletedProcess[str] = kubectl(
        "create", "-n", namespace, "-f", "-", input=json.dumps(body), check=False
    )
    return result


async def test_forged_misaddressed_late_and_replayed_signals_are_refused_at_apply(
    api: KubeApi, namespace: str, kubectl: Any, start_operator: Any
) -> None:
    await start_with_webhook(start_operator, api, namespace)
    gates = [gate("one", "BeforeExecution", "approve", "security"), gate("two")]
    await create_workorder(
        api, namespace, workorder("guarded", "deploy", yaml="a: 1\n", gates=gates)
    )
    await wait_wp(api, namespace, "guarded.one", "active")
    await wait_wp(api, namespace, "guarded.two", "active")
    me, groups = await identity(api)
    token_one = await token_of(api, namespace, "guarded.one")

    def body(wp: str, name: str, token: str) -> Body:
        b = build_signal(
            namespace=namespace,
            waitpoint=wp,
            name=name,
            payload="",
            sender=me,
            groups=groups,
            token=token,
        )
        b["metadata"]["name"] = b["metadata"].pop("generateName") + "x"
        return b

    forged = _apply(kubectl, namespace, body("guarded.one", "approve", "0" * 64))
    assert forged.returncode != 0 and "InvalidProof" in forged.stderr
    misaddressed = body("guarded.one", "approve", token_one)
    misaddressed["spec"]["waitpointName"] = "guarded.two"
    wrong = _apply(kubectl, namespace, misaddressed)
    assert wrong.returncode != 0 and "InvalidProof" in wrong.stderr
    missing = _apply(kubectl, namespace, body("guarded-nope", "approve", token_one))
    assert missing.returncode != 0 and "WaitpointNotFound" in missing.stderr
    other_sender = body("guarded.one", "approve", token_one)
    other_sender["metadata"]["annotations"]["workgate.io/sender"] = "someone-else"
    spoofed = _apply(kubectl, namespace, other_sender)
    assert spoofed.returncode != 0 and "SenderMismatch" in spoofed.stderr

    accepted = body("guarded.one", "approve", token_one)
    assert _apply(kubectl, namespace, accepted).returncode == 0
    await wait_for(
        lambda: _phase(api, namespace, accepted["metadata"]["name"], "Accepted"), what="accepted"
    )
    replay = dict(accepted, metadata={**accepted["metadata"], "name": "replayed"})
    replayed = _apply(kubectl, namespace, replay)
    assert replayed.returncode != 0 and "Replayed" in replayed.stderr

    signal(kubectl, namespace, "guarded.two", "ok")
    await wait_wp(api, namespace, "guarded.two", "closed")
    token_two = await token_of(api, namespace, "guarded.two")
    late = _apply(kubectl, namespace, body("guarded.two", "ok", token_two))
    assert late.returncode != 0 and "WaitpointClosed" in late.stderr

    # None of it moved the WorkOrder or the first waitpoint (the WorkOrder follows the
    # close of "two" in a reconcile of its own: wait for that, then look).
    wo = await wait_waiting_on(api, namespace, "guarded", "one")
    assert wo["status"]["phase"] == "WAITING"
    one = (await waitpoint(api, namespace, "guarded.one"))["status"]
    assert one["state"] == "active" and one["receivedCount"] == 1
    names = {s["metadata"]["name"] for s in await list_items(api, SIGNALS.path(namespace))}
    # Only the accepted signal and the one `kubectl workgate` sent exist.
    assert accepted["metadata"]["name"] in names and len(names) == 2, names


async def _phase(api: KubeApi, namespace: str, name: str, phase: str) -> bool:
    sig = await api.get(SIGNALS.path(namespace, name))
    return (sig.get("status") or {}).get("phase") == phase


async def test_only_users_who_can_read_the_token_can_signal(
    api: KubeApi, namespace: str, kubectl: Any, start_operator: Any, tmp_path: Path
) -> None:
    await start_with_webhook(start_operator, api, namespace)
    await create_workorder(
        api, namespace, workorder("gated", "deploy", yaml="a: 1\n", gates=[gate("ok")])
    )
    await wait_wp(api, namespace, "gated.ok", "active")
    rules = [
        {
            "apiGroups": ["workgate.io"],
            "resources": ["waitpoints", "workorders"],
            "verbs": ["get", "list"],
        },
        {"apiGroups": ["workgate.io"], "resources": ["signals"], "verbs": ["create", "get"]},
        {"apiGroups": ["workgate.io"], "resources": ["waitpoints"], "verbs": ["approve"]},
    ]
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "signaller"},
        "rules": rules,
    }
    reader = {
        **role,
        "metadata": {"name": "token-reader"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}],
    }
    for manifest in (role, reader):
        kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))
    outsider = service_account_kubeconfig(kubectl, namespace, "outsider", tmp_path)
    reviewer = service_account_kubeconfig(kubectl, namespace, "reviewer", tmp_path)
    for sa in ("outsider", "reviewer"):
        kubectl(
            "create",
            "rolebinding",
            f"{sa}-signaller",
            "--role=signaller",
            f"--serviceaccount={namespace}:{sa}",
            "-n",
            namespace,
        )
    kubectl(
        "create",
        "rolebinding",
        "reviewer-tokens",
        "--role=token-reader",
        f"--serviceaccount={namespace}:reviewer",
        "-n",
        namespace,
    )

    denied = plugin("signal", "gated.ok", "approve", "-n", namespace, kubeconfig=outsider)
    assert denied.returncode != 0 and "forbidden" in denied.stderr
    assert await list_items(api, SIGNALS.path(namespace)) == []
    allowed = plugin("signal", "gated.ok", "approve", "-n", namespace, kubeconfig=reviewer)
    assert allowed.returncode == 0, allowed.stderr
    await wait_phase(api, namespace, "gated", "PENDING")
    [received] = (await waitpoint(api, namespace, "gated.ok"))["status"]["receivedSignals"]
    assert received["sender"] == f"system:serviceaccount:{namespace}:reviewer"


async def test_no_token_outside_its_secret(
    api: KubeApi, namespace: str, kubectl: Any, start_operator: Any
) -> None:
    """After a full gated run, scan every object, Event and the operator's log for tokens."""
    op = await start_with_webhook(start_operator, api, namespace)
    gates = [gate("a", "BeforeExecution", "approve"), gate("b", "AfterSuccess")]
    await create_workorder(api, namespace, workorder("scan", gates=gates))
    await wait_wp(api, namespace, "scan.a", "active")
    signal(kubectl, namespace, "scan.a", "approve", payload="p")
    await wait_for(lambda: api.get(BUILDRUNS.path(namespace, "scan-a1")), what="BuildRun")
    await finish_build_run(api, namespace, "scan-a1", succeeded=True)
    await wait_wp(api, namespace, "scan.b", "active")
    signal(kubectl, namespace, "scan.b", "done")
    await wait_phase(api, namespace, "scan", "SUCCEEDED")

    tokens = {wp: await token_of(api, namespace, wp) for wp in ("scan.a", "scan.b")}
    needles = set()
    for token in tokens.values():
        needles |= {token, base64.b64encode(token.encode()).decode()}
    kinds = kubectl("api-resources", "--verbs=list", "-o", "name").stdout.split()
    leaks = []
    for kind in kinds:
        result = kubectl("get", kind, "-A", "-o", "json", check=False)
        if result.returncode != 0:
            continue
        for item in json.loads(result.stdout).get("items", []):
            meta = item["metadata"]
            if (
                kind == "secrets"
                and meta.get("namespace") == namespace
                and meta["name"].endswith("-token")
            ):
                continue  # the token's own Secret
            text = json.dumps(item)
            if any(n in text for n in needles):
                leaks.append(f"{kind}/{meta.get('namespace')}/{meta['name']}")
    assert leaks == []
    log = op.log
    assert log and not any(n in log for n in needles)
    # ...and its own Secret does hold it.
    secrets = await list_items(api, SECRETS.path(namespace))
    assert sum(any(n in json.dumps(s) for n in needles) for s in secrets) == 2


async def test_signal_to_unknown_waitpoint_is_refused_by_the_controller_too(
    api: KubeApi, namespace: str, start_operator: Any
) -> None:
    """With no webhook in front (failurePolicy aside), the controller still judges signals."""
    start_operator(namespace)
    await create_workorder(
        api,
        namespace,
        workorder("ctl", "deploy", yaml="a: 1\n", gates=[gate("g", "BeforeExecution", "approve")]),
    )
    await wait_wp(api, namespace, "ctl.g", "active")
    me = await whoami(api)
    forged = build_signal(
        namespace=namespace,
        waitpoint="ctl.g",
        name="approve",
        payload="",
        sender=me,
        token="f" * 64,
    )
    forged["metadata"]["name"] = "forged"
    del forged["metadata"]["generateName"]
    await api.create(SIGNALS.path(namespace), forged)
    await wait_for(lambda: _phase(api, namespace, "forged", "Rejected"), what="rejected")
    rejected = await api.get(SIGNALS.path(namespace, "forged"))
    assert rejected["status"]["reason"] == "InvalidProof"
    assert (await get_workorder(api, namespace, "ctl"))["status"]["phase"] == "WAITING"
    with pytest.raises(ApiError) as immutable:
        await api.merge_patch(
            WAITPOINTS.path(namespace, "ctl.g"), {"spec": {"requiredSignalNames": []}}
        )
    assert "immutable" in immutable.value.message


AGENT_RULES = shipped_role("workgate-agent")["rules"]
SUSPEND_ONCE = (
    "import json, os, sys; sys.stdin.read(); "
    "json.dump({'key': 'review', 'requiredSignalNames': ['go']}, open(os.environ['WORKGATE_SUSPEND_FILE'], 'w'))"
)


async def test_agent_suspends_its_work_order_and_alone_receives_the_token(
    api: KubeApi, namespace: str, kubectl: Any, start_operator: Any, tmp_path: Path
) -> None:
    await start_with_webhook(start_operator, api, namespace)
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "agent"},
        "rules": AGENT_RULES,
    }
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(role))
    agent_config = service_account_kubeconfig(kubectl, namespace, "agent", tmp_path)
    kubectl(
        "create",
        "rolebinding",
        "agent",
        "--role=agent",
        f"--serviceaccount={namespace}:agent",
        "-n",
        namespace,
    )
    await create_workorder(api, namespace, workorder("job", "migrate", yaml="db: main\n"))
    tokens = tmp_path / "tokens"

    def run_agent(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "workgate.cli.main",
                "agent",
                "--work-type",
                "migrate",
                "--namespace",
                namespace,
                "--once",
                "--token-dir",
                str(tokens),
                "--",
                *command,
            ],
            env={**os.environ, "KUBECONFIG": agent_config},
            capture_output=True,
            text=True,
            timeout=60,
        )

    first = run_agent(sys.executable, "-c", SUSPEND_ONCE)
    assert first.returncode == 0, first.stderr
    waiting = await wait_phase(api, namespace, "job", "WAITING")
    assert (
        waiting["status"]["waitingStage"] == "Dynamic"
        and waiting["status"]["waitingOn"] == "review"
    )
    assert waiting["status"]["retryCount"] == 0
    await wait_wp(api, namespace, "job.review", "active")
    token_file = tokens / f"{namespace}.job.review.token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert token_file.read_text() == await token_of(api, namespace, "job.review")
    assert token_file.read_text() not in first.stderr + first.stdout
    # The agent reads no Secret at all: the token reached it sealed to its own key.
    cannot = kubectl(
        "auth",
        "can-i",
        "get",
        "secrets",
        "-n",
        namespace,
        f"--as=system:serviceaccount:{namespace}:agent",
        check=False,
    )
    assert cannot.stdout.strip() == "no"
    sealed = (await waitpoint(api, namespace, "job.review"))["status"]["sealedToken"]
    assert sealed and token_file.read_text() not in sealed

    signal(kubectl, namespace, "job.review", "go")
    resumed = await wait_phase(api, namespace, "job", "PENDING")
    assert resumed["status"]["retryCount"] == 0
    second = run_agent("true")
    assert second.returncode == 0, second.stderr
    done = await wait_phase(api, namespace, "job", "SUCCEEDED")
    assert done["status"]["attempt"] == 1


async def test_a_dynamic_waitpoint_needs_a_recipient_key_and_a_claimed_work_order(
    api: KubeApi, namespace: str, kubectl: Any, start_operator: Any
) -> None:
    await start_with_webhook(start_operator, api, namespace)
    await create_workorder(api, namespace, workorder("held", "migrate", yaml="a: 1\n"))
    await wait_phase(api, namespace, "held", "PENDING")
    wp: Body = {
        "apiVersion": "workgate.io/v1alpha1",
        "kind": "Waitpoint",
        "metadata": {
            "name": "held.steal",
            "annotations": {"workgate.io/token-recipient-key": "bm9wZQ=="},
        },
        "spec": {"workOrderName": "held", "key": "steal", "stage": "Dynamic"},
    }
    bad_key = kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(wp), check=False)
    assert bad_key.returncode != 0 and "X25519 public key" in bad_key.stderr
    _, public = recipient_keypair()
    wp["metadata"]["annotations"]["workgate.io/token-recipient-key"] = public
    unclaimed = kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(wp), check=False)
    assert (
        unclaimed.returncode != 0
        and "only the claimant holding the WorkOrder's current attempt can suspend it"
        in unclaimed.stderr
    )


async def test_a_planted_token_secret_is_reported_not_adopted(
    api: KubeApi, namespace: str, kubectl: Any, start_operator: Any
) -> None:
    """A co-tenant who creates the Secret a gate's token would go to, before the gate
    exists, gets neither adoption nor a retry loop: the waitpoint says Ready=False
    NameTaken with one Event, leaves the planted Secret alone, and mints its own token once
    the name is free."""
    planted = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "rel.approval-token"},
        "data": {"token": base64.b64encode(b"planted").decode()},
    }
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(planted))
    await start_with_webhook(start_operator, api, namespace)
    await create_workorder(
        api, namespace, workorder("rel", gates=[gate("approval", "BeforeExecution", "approve")])
    )

    async def reported() -> Body | None:
        wp = await waitpoint(api, namespace, "rel.approval")
        ready = [c for c in (wp.get("status") or {}).get("conditions", []) if c["type"] == "Ready"]
        return wp if ready and ready[0]["reason"] == "NameTaken" else None

    wp = await wait_for(reported, what="rel.approval Ready=False NameTaken")
    assert wp["status"].get("state") is None and not wp["status"].get("tokenSecretName")
    [ready] = [c for c in wp["status"]["conditions"] if c["type"] == "Ready"]
    assert ready["status"] == "False" and "rel.approval-token" in ready["message"]
    selector = "involvedObject.name=rel.approval,reason=NameTaken"

    async def event_count() -> int | None:
        got = kubectl("get", "events", "-n", namespace, "--field-selector", selector, "-o", "json")
        items = json.loads(got.stdout)["items"]
        return sum(e.get("count") or 1 for e in items) or None

    assert await wait_for(event_count, what="the NameTaken Event") == 1
    secret = await api.get(SECRETS.path(namespace, "rel.approval-token"))
    assert not secret["metadata"].get("ownerReferences")
    assert base64.b64decode(secret["data"]["token"]) == b"planted"
    assert (await get_workorder(api, namespace, "rel"))["status"]["phase"] == "WAITING"
    # Not a loop: over a re-check, neither a status write nor another Event.
    await asyncio.sleep(NAME_TAKEN_RECHECK_SECONDS + 2)
    again = await waitpoint(api, namespace, "rel.approval")
    assert again["metadata"]["resourceVersion"] == wp["metadata"]["resourceVersion"]
    assert await event_count() == 1

    kubectl("delete", "secret", "rel.approval-token", "-n", namespace)
    wp = await wait_wp(api, namespace, "rel.approval", "active")
    secret = await api.get(SECRETS.path(namespace, "rel.approval-token"))
    assert secret["metadata"]["ownerReferences"][0]["uid"] == wp["metadata"]["uid"]
    assert base64.b64decode(secret["data"]["token"]) != b"planted"
    assert "Accepted" in signal(kubectl, namespace, "rel.approval", "approve")
    await wait_for(lambda: api.get(BUILDRUNS.path(namespace, "rel-a1")), what="BuildRun")


async def test_a_token_secret_not_controlled_by_the_waitpoints_uid_is_not_used(
    api: KubeApi, namespace: str, kubectl: Any, start_operator: Any
) -> None:
    """A reviewer's token comes only from a Secret whose controller is this very waitpoint
    (its uid), not from one that merely names it: a co-tenant who swaps the token Secret
    for one of their own, with an owner reference to the waitpoint's name, gets no Signal
    sent, whether the plugin read the waitpoint first (approve) or not (signal)."""
    await start_with_webhook(start_operator, api, namespace)
    await create_workorder(
        api, namespace, workorder("swap", gates=[gate("approval", "BeforeExecution", "approve")])
    )
    wp = await wait_wp(api, namespace, "swap.approval", "active")
    secret_name = wp["status"]["tokenSecretName"]
    real = await api.get(SECRETS.path(namespace, secret_name))
    [ref] = real["metadata"]["ownerReferences"]
    assert ref["uid"] == wp["metadata"]["uid"]
    kubectl("delete", "secret", secret_name, "-n", namespace)
    # Controlled by the waitpoint (an owner reference anyone may copy), but no token in it:
    # a clear error, not a traceback.
    empty = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": secret_name, "ownerReferences": [ref]},
        "data": {"other": base64.b64encode(b"x").decode()},
    }
    kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(empty))
    result = plugin("signal", "swap.approval", "approve", "-n", namespace, "--timeout", "5")
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert f"Secret {secret_name} holds no readable token" in result.stderr
    kubectl("delete", "secret", secret_name, "-n", namespace)
    # The garbage collector deletes a dependent whose owner uid does not exist: a finalizer
    # keeps the planted Secret readable meanwhile (it is what such a swap leaves for a while).
    hold = "test.workgate.io/hold"
    planted = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret_name,
            "ownerReferences": [{**ref, "uid": "00000000-0000-0000-0000-000000000000"}],
            "finalizers": [hold],
        },
        "data": {"token": base64.b64encode(b"planted").decode()},
    }
    kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(planted))
    try:
        for command in (("signal", "swap.approval", "approve"), ("approve", "swap.approval")):
            result = plugin(*command, "-n", namespace, "--timeout", "5")
            assert result.returncode != 0, result.stdout
            assert f"Secret {secret_name} is not waitpoint swap.approval's token" in result.stderr
        listed = await api.get(SIGNALS.path(namespace))
        assert listed["items"] == []
        assert (await get_workorder(api, namespace, "swap"))["status"]["phase"] == "WAITING"
    finally:
        kubectl(
            "patch",
            "secret",
            secret_name,
            "-n",
            namespace,
            "--type=json",
            "-p",
            '[{"op": "remove", "path": "/metadata/finalizers"}]',
        )
