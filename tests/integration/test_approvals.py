"""Approvals that stand up to an audit, on the real API server.

Every person here is a ServiceAccount of the test's namespace acting with its own token,
bound to the roles deploy/ ships (or, where a test needs someone in between, a Role
spelled out here):

- author      the built-in `edit` role (which aggregates workgate-author and reads
              Secrets), plus creating Signals: everything except deciding;
- reviewer1-3 workgate-reviewer (which holds the verb `approve`) and the per-namespace
              workgate-reviewer-secrets Role;
- lurker      what reviewers needed before: reading waitpoints and token Secrets and
              creating Signals, but no `approve`.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import (
    OperatorProcess,
    get_workorder,
    list_items,
    service_account_kubeconfig,
    start_with_webhook,
    wait_for,
    wait_phase,
    workorder,
)
from tests.integration.test_waitpoints import plugin, token_of, wait_wp, waitpoint
from workgate.api.common import now_utc, parse_time
from workgate.cli.kubectl_plugin import build_signal, identity
from workgate.core.approvals import POLICY_SETTLE
from workgate.k8s.api import EVENTS, SIGNALS, Body, KubeApi, load_config

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
REVIEWERS = ("reviewer1", "reviewer2", "reviewer3")


@dataclass
class People:
    namespace: str
    configs: dict[str, str]
    kubectl_binary: Any

    def user(self, who: str) -> str:
        return f"system:serviceaccount:{self.namespace}:{who}"

    def workgate(self, who: str, *args: str) -> subprocess.CompletedProcess[str]:
        """`kubectl workgate ARGS -n NS` with `who`'s own token."""
        return plugin(*args, "-n", self.namespace, kubeconfig=self.configs[who])

    def kubectl(
        self, who: str, *args: str, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["kubectl", f"--kubeconfig={self.configs[who]}", "-n", self.namespace, *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def create(self, who: str, body: Body) -> None:
        result = self.kubectl(who, "create", "-f", "-", input=json.dumps(body))
        assert result.returncode == 0, result.stderr

    def api(self, who: str) -> KubeApi:
        return KubeApi(load_config(self.configs[who]))


def bind(kubectl: Any, namespace: str, who: str, role: str) -> None:
    kind = "--clusterrole" if not role.startswith("role:") else "--role"
    kubectl(
        "create",
        "rolebinding",
        f"{who}-{role.removeprefix('role:')}",
        f"{kind}={role.removeprefix('role:')}",
        f"--serviceaccount={namespace}:{who}",
        "-n",
        namespace,
    )


def role(kubectl: Any, namespace: str, name: str, rules: list[dict[str, Any]]) -> None:
    manifest = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name},
        "rules": rules,
    }
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))


def can_i(kubectl: Any, namespace: str, who: str, verb: str, what: str) -> bool:
    answer = kubectl(
        "auth", "can-i", verb, what, "-n", namespace, f"--as={who}", check=False
    ).stdout.strip()
    return answer == "yes"


@pytest.fixture
def people(namespace: str, kubectl: Any, tmp_path: Path) -> People:
    # The shipped ClusterRoles (as test_rbac.py applies them) and the per-namespace template.
    kubectl("apply", "-f", str(DEPLOY / "rbac" / "roles.yaml"))
    kubectl("apply", "-n", namespace, "-f", str(DEPLOY / "rbac" / "reviewer-secrets-role.yaml"))
    role(
        kubectl,
        namespace,
        "signal-sender",
        [{"apiGroups": ["workgate.io"], "resources": ["signals"], "verbs": ["create", "get"]}],
    )
    role(
        kubectl,
        namespace,
        "token-holder",
        [
            {
                "apiGroups": ["workgate.io"],
                "resources": ["waitpoints", "workorders"],
                "verbs": ["get", "list"],
            },
            {"apiGroups": ["workgate.io"], "resources": ["signals"], "verbs": ["create", "get"]},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
        ],
    )
    configs = {}
    for who in ("author", *REVIEWERS, "lurker"):
        configs[who] = service_account_kubeconfig(kubectl, namespace, who, tmp_path)
    bind(kubectl, namespace, "author", "edit")
    bind(kubectl, namespace, "author", "role:signal-sender")
    for who in REVIEWERS:
        bind(kubectl, namespace, who, "workgate-reviewer")
        bind(kubectl, namespace, who, "role:workgate-reviewer-secrets")
    bind(kubectl, namespace, "lurker", "role:token-holder")
    return People(namespace, configs, kubectl)


async def ready(people: People, kubectl: Any) -> None:
    """Wait for `edit` to aggregate workgate-author (the controller-manager does that)."""
    author = people.user("author")

    async def aggregated() -> bool:
        return can_i(kubectl, people.namespace, author, "create", "workorders.workgate.io")

    await wait_for(aggregated, timeout=60, interval=0.5, what="edit to aggregate workgate-author")


def gated(name: str, *gates: dict[str, Any], **metadata: Any) -> Body:
    body = workorder(name, "deploy", yaml="app: web\n", gates=list(gates))
    body["metadata"].update(metadata)
    return body


def gate(key: str, *required: str, **extra: Any) -> dict[str, Any]:
    return {"key": key, "stage": "BeforeExecution", "requiredSignalNames": list(required), **extra}


async def restart_with_webhook(op: OperatorProcess, api: KubeApi) -> None:
    """SIGKILL and start again; wait until the new process registered its own certificate."""
    path = (
        f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{op.webhook_config}"
    )

    async def ca_bundle() -> str:
        config = await api.get(path)
        return str(config["webhooks"][0]["clientConfig"].get("caBundle", ""))

    before = await ca_bundle()
    op.kill()
    op.start()

    async def renewed() -> bool:
        return await ca_bundle() != before

    await wait_for(renewed, timeout=30, what="the restarted operator's webhook")


def refused(result: subprocess.CompletedProcess[str], reason: str) -> str:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert reason in result.stderr, result.stderr
    return result.stderr


def accepted(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    assert "Accepted" in result.stdout, result.stdout


async def test_approving_takes_the_approve_verb_not_the_token_and_edit_lacks_it(
    api: KubeApi, namespace: str, kubectl: Any, start_operator: Any, people: People
) -> None:
    await ready(people, kubectl)
    await start_with_webhook(start_operator, api, namespace)
    # The author queues the work with their own token; admission records them as its
    # creator whatever the manifest claims, and keeps the record through edits.
    forged = {"annotations": {"workgate.io/created-by": people.user("reviewer1")}}
    smoke = gate("smoke", "ok", forbidSelfApproval=False)  # not an approval: no SoD
    people.create("author", gated("rel", gate("ok", "approve"), smoke, **forged))
    wo = await get_workorder(api, namespace, "rel")
    assert wo["metadata"]["annotations"]["workgate.io/created-by"] == people.user("author")
    edit = people.kubectl(
        "author", "annotate", "wo", "rel", "workgate.io/created-by=nobody", "--overwrite"
    )
    assert edit.returncode == 0, edit.stderr
    wo = await get_workorder(api, namespace, "rel")
    assert wo["metadata"]["annotations"]["workgate.io/created-by"] == people.user("author")
    wp = await wait_wp(api, namespace, "rel.ok", "active")
    assert wp["status"]["author"] == people.user("author")

    # The author (edit) reads the token and may create Signals, but holds no `approve`.
    author = people.user("author")
    assert can_i(kubectl, namespace, author, "get", "secrets")
    assert can_i(kubectl, namespace, author, "create", "signals.workgate.io")
    assert not can_i(kubectl, namespace, author, "approve", "waitpoints.workgate.io/rel.ok")
    assert can_i(
        kubectl, namespace, people.user("reviewer1"), "approve", "waitpoints.workgate.io/rel.ok"
    )
    # Their own gate: refused twice over (separation of duties first, then RBAC).
    refused(people.workgate("author", "approve", "rel.ok"), "SelfApproval")
    message = refused(people.workgate("author", "approve", "rel.smoke"), "NotPermitted")
    assert f"{author} may not approve waitpoints/rel.smoke" in message

    # Someone with everything reviewers needed before (the token, creating Signals) but no
    # `approve`: refused at `kubectl apply` with a clear message, by the plugin or by hand.
    message = refused(people.workgate("lurker", "approve", "rel.ok"), "NotPermitted")
    assert "reading the token Secret is not enough" in message
    async with people.api("lurker") as lurker:
        user, groups = await identity(lurker)
        body = build_signal(
            namespace=namespace,
            waitpoint="rel.ok",
            name="approve",
            payload="",
            sender=user,
            groups=groups,
            token=await token_of(lurker, namespace, "rel.ok"),
        )
    by_hand = people.kubectl("lurker", "create", "-f", "-", input=json.dumps(body))
    assert by_hand.returncode != 0 and "NotPermitted" in by_hand.stderr, by_hand.stderr
    assert await list_items(api, SIGNALS.path(namespace)) == []
    assert (await get_workorder(api, namespace, "rel"))["status"]["phase"] == "WAITING"

    accepted(people.workgate("reviewer1", "approve", "rel.ok", "--payload", "lgtm"))
    accepted(people.workgate("reviewer2", "approve", "rel.smoke"))
    await wait_phase(api, namespace, "rel", "PENDING")
    [record] = (await waitpoint(api, namespace, "rel.ok"))["status"]["receivedSignals"]
    assert record["sender"] == people.user("reviewer1")
    # Not even an administrator can rewrite who sent a Signal, or in which groups.
    regroup = kubectl(
        "annotate", "-n", namespace, "signal", record["signal"],
        "workgate.io/sender-groups=release-managers", "--overwrite", check=False,
    )  # fmt: skip
    assert regroup.returncode != 0 and "cannot change" in regroup.stderr, regroup.stderr


async def test_a_quorum_of_distinct_named_approvers(
    api: KubeApi, namespace: str, kubectl: Any, start_operator: Any, people: People
) -> None:
    await ready(people, kubectl)
    await start_with_webhook(start_operator, api, namespace)
    approvers = [
        {"kind": "ServiceAccount", "name": "reviewer1"},
        {"kind": "User", "name": people.user("reviewer2")},
    ]
    ship = gate("ship", "approve", requiredApprovals=2, approvers=approvers, timeoutSeconds=3600)
    people.create("author", gated("release", ship))
    wp = await wait_wp(api, namespace, "release.ship", "active")
    listed = kubectl("get", "wp", "release.ship", "-n", namespace).stdout
    assert "<invalid>" not in listed and wp["status"]["expiresAt"] in listed, listed
    assert "approve: 2 more" in listed

    # reviewer3 may approve by RBAC, but is not one of this gate's approvers.
    refused(people.workgate("reviewer3", "approve", "release.ship"), "NotAnApprover")
    accepted(people.workgate("reviewer1", "approve", "release.ship"))
    one = (await waitpoint(api, namespace, "release.ship"))["status"]
    assert one["state"] == "active"
    assert one["approvals"] == [
        {"name": "approve", "required": 2, "approvedBy": [people.user("reviewer1")], "remaining": 1}
    ]
    assert one["waitingFor"].startswith(f"approve: 1 more (approved: {people.user('reviewer1')})")
    pending = plugin("pending", "-A")
    assert pending.returncode == 0, pending.stderr
    [row] = [line for line in pending.stdout.splitlines() if "release.ship" in line]
    assert namespace in row and f"approve: {people.user('reviewer1')}" in row

    # Signing twice does not make two approvals.
    refused(people.workgate("reviewer1", "approve", "release.ship"), "AlreadyCounted")
    assert (await waitpoint(api, namespace, "release.ship"))["status"]["state"] == "active"
    assert (await get_workorder(api, namespace, "release"))["status"]["phase"] == "WAITING"

    accepted(people.workgate("reviewer2", "approve", "release.ship"))
    await wait_phase(api, namespace, "release", "PENDING")
    done = (await waitpoint(api, namespace, "release.ship"))["status"]
    assert done["closeReason"] == "Satisfied" and "waitingFor" not in done
    assert [r["sender"] for r in done["receivedSignals"]] == [
        people.user("reviewer1"),
        people.user("reviewer2"),
    ]


async def test_self_approval_is_refused_where_forbidden_and_a_rejection_fails_the_work(
    api: KubeApi, namespace: str, kubectl: Any, start_operator: Any, people: People
) -> None:
    await ready(people, kubectl)
    bind(kubectl, namespace, "reviewer1", "workgate-author")  # a reviewer who also authors
    await start_with_webhook(start_operator, api, namespace)
    not_an_approval = gate("smoke", "ok", forbidSelfApproval=False)
    people.create("reviewer1", gated("mine", gate("sod", "approve"), not_an_approval))
    await wait_wp(api, namespace, "mine.sod", "active")
    message = refused(people.workgate("reviewer1", "approve", "mine.sod"), "SelfApproval")
    assert "separation of duties" in message
    accepted(people.workgate("reviewer1", "approve", "mine.smoke"))
    accepted(people.workgate("reviewer2", "approve", "mine.sod"))
    await wait_phase(api, namespace, "mine", "PENDING")

    # Anyone allowed to decide may reject; here the approvers are a Group.
    everyone_here = [{"kind": "Group", "name": f"system:serviceaccounts:{namespace}"}]
    people.create("author", gated("doomed", gate("review", "approve", approvers=everyone_here)))
    await wait_wp(api, namespace, "doomed.review", "active")
    rejected = people.workgate("reviewer3", "reject", "doomed.review", "--payload", "not today")
    accepted(rejected)
    assert "(reject)" in rejected.stdout
    failed = await wait_phase(api, namespace, "doomed", "FAILED")
    st = failed["status"]
    assert st["lastErrorReason"] == "Rejected" and st["retryCount"] == 0
    assert st["rejection"]["by"] == people.user("reviewer3")
    assert st["rejection"]["payload"] == "not today"
    assert st["rejection"]["waitpoint"] == "doomed.review" and st["rejection"]["at"]
    wp = (await waitpoint(api, namespace, "doomed.review"))["status"]
    assert wp["closeReason"] == "Rejected" and wp["rejection"] == st["rejection"]

    async def rejected_events() -> list[Body] | None:  # Events are sent in the background
        events = await list_items(
            api, EVENTS.path(namespace), fieldSelector="involvedObject.name=doomed"
        )
        return [e for e in events if e["reason"] == "Rejected"] or None

    [event] = await wait_for(rejected_events, what="the Rejected Event")
    assert event["type"] == "Warning" and people.user("reviewer3") in event["message"]
    refused(people.workgate("reviewer2", "approve", "doomed.review"), "WaitpointClosed")


@pytest.fixture
def identity_policy(namespace: str, kubectl: Any) -> Iterator[str]:
    """The shipped identity policy, bound (by a binding of the test's own) to the test's
    namespace only. The policy is removed afterwards only if this test created it."""
    existed = (
        kubectl("get", "mutatingadmissionpolicy", "workgate-identity", check=False).returncode == 0
    )
    kubectl("apply", "-f", str(DEPLOY / "identity-policy" / "policy.yaml"))
    binding = f"{namespace}-identity"
    yield binding
    kubectl("delete", "mutatingadmissionpolicybinding", binding, "--ignore-not-found")
    if not existed:
        kubectl("delete", "mutatingadmissionpolicy", "workgate-identity", "--ignore-not-found")


def bind_policy(kubectl: Any, namespace: str, binding: str) -> Body:
    manifest = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingAdmissionPolicyBinding",
        "metadata": {"name": binding},
        "spec": {
            "policyName": "workgate-identity",
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
            },
        },
    }
    created: Body = json.loads(
        kubectl("create", "-f", "-", "-o", "json", input=json.dumps(manifest)).stdout
    )
    return created


async def test_without_the_webhook_a_flood_of_signals_stays_bounded_and_the_work_resumes(
    api: KubeApi,
    namespace: str,
    kubectl: Any,
    start_operator: Any,
    people: People,
    identity_policy: str,
) -> None:
    await ready(people, kubectl)
    op: OperatorProcess = start_operator(
        namespace, WORKGATE_IDENTITY_POLICY_BINDING=identity_policy
    )  # no webhook: the controller alone judges
    two = gate("go", "approve", requiredApprovals=2)

    # Nothing the API server vouches for yet: no sender can be believed.
    people.create("author", gated("early", two))
    await wait_wp(api, namespace, "early.go", "active")
    refused(people.workgate("reviewer1", "approve", "early.go"), "SenderUnverified")

    # The shipped policy, bound to this namespace: the API server records identities.
    binding = bind_policy(kubectl, namespace, identity_policy)
    settled = parse_time(binding["metadata"]["creationTimestamp"])
    assert settled is not None
    # The operator believes only objects created after the policy took effect (a fixed
    # settling time after its binding, see core.approvals.POLICY_SETTLE).
    await asyncio.sleep(
        max(0.0, (settled + POLICY_SETTLE + timedelta(seconds=1) - now_utc()).total_seconds())
    )
    forged = {"annotations": {"workgate.io/created-by": people.user("reviewer2")}}
    people.create("author", gated("flood", two, **forged))
    wo = await get_workorder(api, namespace, "flood")
    assert wo["metadata"]["annotations"]["workgate.io/created-by"] == people.user("author")
    wp = await wait_wp(api, namespace, "flood.go", "active")
    assert wp["status"]["author"] == people.user("author")

    async with people.api("reviewer1") as r1, people.api("lurker") as lurker:
        me, groups = await identity(r1)
        token = await token_of(r1, namespace, "flood.go")

        def signal(sender: str, name: str = "approve") -> Body:
            body = build_signal(
                namespace=namespace,
                waitpoint="flood.go",
                name=name,
                payload="",
                sender=sender,
                groups=groups,
                token=token,
            )
            body["metadata"]["name"] = (
                f"{body['metadata'].pop('generateName')}{os.urandom(4).hex()}"
            )
            return body

        # Claiming to be reviewer2 does not work: the API server records the real sender,
        # for whom the proof does not match.
        spoof = await r1.create(SIGNALS.path(namespace), signal(people.user("reviewer2")))
        assert spoof["metadata"]["annotations"]["workgate.io/sender"] == me
        # The token without `approve`: the controller asks the API server and refuses.
        lurker_user, _ = await identity(lurker)
        no_verb = await lurker.create(SIGNALS.path(namespace), signal(lurker_user))

        # A token holder signs 1,000 times.
        limit = asyncio.Semaphore(16)

        async def one() -> str:
            async with limit:
                created = await r1.create(SIGNALS.path(namespace), signal(me))
                return str(created["metadata"]["name"])

        flood = await asyncio.gather(*(one() for _ in range(1000)))

    async def judged() -> list[Body] | None:
        items = await list_items(api, SIGNALS.path(namespace))
        mine = [s for s in items if s["spec"]["waitpointName"] == "flood.go"]
        done = all((s.get("status") or {}).get("phase") for s in mine)
        return mine if done and len(mine) == 1002 else None

    signals = {s["metadata"]["name"]: s for s in await wait_for(judged, timeout=300, interval=1)}
    verdicts = Counter(
        (signals[n]["status"]["phase"], signals[n]["status"]["reason"]) for n in flood
    )
    assert verdicts == {("Accepted", "Accepted"): 1, ("Rejected", "AlreadyCounted"): 999}
    assert signals[spoof["metadata"]["name"]]["status"]["reason"] == "InvalidProof"
    assert signals[no_verb["metadata"]["name"]]["status"]["reason"] == "NotPermitted"
    wp = await waitpoint(api, namespace, "flood.go")
    size = len(json.dumps(wp))
    assert [r["sender"] for r in wp["status"]["receivedSignals"]] == [me]
    assert wp["status"]["state"] == "active" and size < 8192, size
    # Events are sent in the background: count them once two listings a second apart agree.
    listed: list[int] = []

    async def settled() -> list[Body] | None:
        events = await list_items(
            api, EVENTS.path(namespace), fieldSelector="involvedObject.name=flood.go"
        )
        listed.append(len(events))
        return events if len(listed) > 1 and listed[-1] == listed[-2] else None

    events = await wait_for(settled, timeout=60, interval=1, what="the flood's Events sent")
    assert any(e["reason"] == "SignalAccepted" for e in events), events
    assert len(events) < 100, len(events)  # refusals are summarised, not one Event each
    print(f"\nwaitpoint after 1,000 signals: {size} bytes, {len(events)} Events")

    # A signal nobody judges within the timeout: exit status 2.
    op.stop()
    late = people.workgate("reviewer2", "approve", "flood.go", "--timeout", "1")
    assert late.returncode == 2 and "not judged" in late.stderr, (late.stdout, late.stderr)
    op.start()
    await wait_phase(api, namespace, "flood", "PENDING", timeout=60)
    assert (await get_workorder(api, namespace, "early"))["status"]["phase"] == "WAITING"


async def test_after_a_key_rotation_an_open_gate_opens_with_its_original_token(
    api: KubeApi, namespace: str, kubectl: Any, start_operator: Any, people: People
) -> None:
    await ready(people, kubectl)
    # The key Secret in the test's namespace, not the shared workgate-system.
    env = {"WORKGATE_OPERATOR_NAMESPACE": namespace, "WORKGATE_TOKEN_KEY_REFRESH_SECONDS": "1"}
    op = await start_with_webhook(start_operator, api, namespace, **env)

    def keys(*args: str) -> str:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "workgate.cli.main",
                "token-key",
                *args,
                "--namespace",
                namespace,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    people.create("author", gated("old", gate("ok", "approve")))
    old = (await wait_wp(api, namespace, "old.ok", "active"))["status"]
    first = old["tokenKeyId"]
    original = await token_of(api, namespace, "old.ok")
    assert original.startswith(f"{first}.")

    rotated = keys("rotate")
    second = rotated.split()[2]
    assert second != first and "is now current" in rotated
    assert keys("list").split("\n")[:2] == [first, f"{second} (current)"]
    # A fresh process knows only what the key Secret says.
    await restart_with_webhook(op, api)
    people.create("author", gated("new", gate("ok", "approve")))
    new = (await wait_wp(api, namespace, "new.ok", "active"))["status"]
    assert new["tokenKeyId"] == second
    assert (await token_of(api, namespace, "new.ok")).startswith(f"{second}.")
    assert "dropped: nothing" in keys("prune")  # the old gate still needs its key

    accepted(people.workgate("reviewer1", "approve", "old.ok"))
    await wait_phase(api, namespace, "old", "PENDING")
    assert await token_of(api, namespace, "old.ok") == original
    # Once no open gate uses the old key, it can go; the new gate is unaffected.
    assert f"dropped: {first}" in keys("prune")
    assert keys("list").split() == [second, "(current)"]
    accepted(people.workgate("reviewer1", "approve", "new.ok"))
    await wait_phase(api, namespace, "new", "PENDING")


def test_kubectl_explain_describes_the_model(kubectl: Any) -> None:
    gate_field = kubectl("explain", "workorder.spec.gates.forbidSelfApproval").stdout
    assert "separation of duties" in gate_field and "created-by" in gate_field
    wp = kubectl("explain", "waitpoint").stdout
    assert "`approve`" in wp and "requiredApprovals" in wp and "Rejected" in wp
    approvers = kubectl("explain", "waitpoint.spec.approvers").stdout
    assert "RBAC subjects" in approvers and "never widens" in approvers
    assert "by whom" in kubectl("explain", "workorder.status.rejection").stdout
