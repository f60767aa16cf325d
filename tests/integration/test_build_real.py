"""The build path against the real controllers: workgate's BuildRun is run by the Shipwright
controller, through a Tekton TaskRun, to a Pod that kwok "runs" on a simulated node.

Nothing here writes a BuildRun's status: outcomes come from the Pod, as kwok's stages take it
through its life. A namespaced BuildStrategy annotated for kwok's failure stage makes a build
fail for real (Shipwright passes a strategy's annotations on to the TaskRun and Pod); one
annotated with a long pod-complete delay keeps a build running.

The tests elsewhere that play the Shipwright controller (`finish_build_run`) do so because they
need an outcome at an exact moment (a BuildRun finishing while the operator is down, during a
claim handover, ...), which no real controller can be told to give.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Kubectl
from tests.integration.conftest import (
    create_workorder,
    get_workorder,
    wait_for,
    wait_phase,
    workorder,
)
from workgate.api.common import parse_time
from workgate.devcluster import kwok, shipwright
from workgate.k8s import shipwright as adapter
from workgate.k8s.api import KubeApi

pytestmark = [pytest.mark.integration, pytest.mark.real_build]
REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "build-workorder.yaml"
FAIL = kwok.FAIL_ANNOTATION
SHIPWRIGHT_BUILDRUN_LABEL = "buildrun.shipwright.io/name"


def get_json(kubectl: Kubectl, *args: str) -> Any:
    return json.loads(kubectl("get", *args, "-o", "json").stdout)


def succeeded(obj: dict[str, Any]) -> dict[str, Any]:
    conditions = (obj.get("status") or {}).get("conditions") or []
    found = [c for c in conditions if c.get("type") == "Succeeded"]
    assert len(found) == 1, f"{obj['metadata']['name']}: no single Succeeded condition"
    return dict(found[0])


def strategy(name: str, annotations: dict[str, str]) -> dict[str, Any]:
    """A namespaced BuildStrategy whose one step never runs anywhere but on kwok's node."""
    return {
        "apiVersion": "shipwright.io/v1beta1",
        "kind": "BuildStrategy",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "steps": [
                {
                    "name": "build",
                    "image": "registry.invalid/workgate/never-pulled:1",
                    "command": ["/bin/false"],
                }
            ]
        },
    }


def build_yaml(name: str, strategy_name: str, kind: str = "BuildStrategy") -> str:
    build = {
        "apiVersion": "shipwright.io/v1beta1",
        "kind": "Build",
        "metadata": {"name": name},
        "spec": {
            "source": {"type": "Git", "git": {"url": "https://git.example.com/team/app"}},
            "strategy": {"name": strategy_name, "kind": kind},
            "output": {"image": "registry.example.com/team/app:latest"},
        },
    }
    return yaml.safe_dump(build)


def executor_objects(kubectl: Kubectl, namespace: str, build_run: str) -> tuple[Any, Any]:
    """The TaskRun Shipwright made for `build_run`, and the Pod Tekton made for it."""
    task_runs = get_json(
        kubectl, "taskrun", "-n", namespace, f"-l={SHIPWRIGHT_BUILDRUN_LABEL}={build_run}"
    )
    assert len(task_runs["items"]) == 1, task_runs["items"]
    task_run = task_runs["items"][0]
    pods = get_json(
        kubectl, "pod", "-n", namespace, f"-l=tekton.dev/taskRun={task_run['metadata']['name']}"
    )
    assert len(pods["items"]) == 1, pods["items"]
    return task_run, pods["items"][0]


def owner_uids(obj: dict[str, Any]) -> list[str]:
    return [ref["uid"] for ref in obj["metadata"].get("ownerReferences", [])]


async def test_example_build_succeeds_through_shipwright_tekton_and_a_pod(
    api: KubeApi, build_namespace: str, kubectl: Kubectl, start_operator: Any
) -> None:
    ns = build_namespace
    start_operator(ns)
    name = yaml.safe_load(EXAMPLE.read_text())["metadata"]["name"]
    kubectl("apply", "-n", ns, "-f", str(EXAMPLE))
    kubectl(
        "wait", "-n", ns, "--for=condition=Succeeded", f"wo/{name}", "--timeout=120s", timeout=150
    )

    wo = await get_workorder(api, ns, name)
    assert (wo["status"]["phase"], wo["status"]["attempt"], wo["status"]["retryCount"]) == (
        "SUCCEEDED",
        1,
        0,
    )
    run = get_json(kubectl, "buildrun", f"{name}-a1", "-n", ns)
    assert owner_uids(run) == [wo["metadata"]["uid"]]
    condition = succeeded(run)
    # Written by Shipwright from the TaskRun, not by anything in this test.
    assert (condition["status"], condition["reason"]) == ("True", "Succeeded")
    assert run["status"]["buildSpec"]["strategy"]["name"] == shipwright.SAMPLE_STRATEGY

    task_run, pod = executor_objects(kubectl, ns, f"{name}-a1")
    assert owner_uids(task_run) == [run["metadata"]["uid"]]
    assert succeeded(task_run)["status"] == "True"
    assert owner_uids(pod) == [task_run["metadata"]["uid"]]
    assert pod["status"]["phase"] == "Succeeded"
    node = get_json(kubectl, "node", pod["spec"]["nodeName"])
    assert (
        node["metadata"]["annotations"][kwok.NODE_ANNOTATION] == "fake"
    )  # placed by the scheduler

    # The README's walkthrough: all four kinds in one listing.
    listing = kubectl("get", "wo,buildrun,taskrun,pod", "-n", ns).stdout
    for shown in (
        f"workorder.workgate.io/{name}",
        f"buildrun.shipwright.io/{name}-a1",
        f"taskrun.tekton.dev/{task_run['metadata']['name']}",
        f"pod/{pod['metadata']['name']}",
    ):
        assert shown in listing, listing


async def test_failed_attempts_carry_shipwrights_reason_and_back_off(
    api: KubeApi, build_namespace: str, kubectl: Kubectl, start_operator: Any
) -> None:
    ns = build_namespace
    annotations = {FAIL: "true", f"{FAIL}/reason": "Error", f"{FAIL}/exit-code": "3"}
    kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(strategy("fails", annotations)))
    start_operator(ns)
    backoff = 3
    await create_workorder(
        api,
        ns,
        workorder(
            "doomed", yaml=build_yaml("doomed-build", "fails"), maxRetries=1, backoffSeconds=backoff
        ),
    )

    waiting = await wait_phase(api, ns, "doomed", "RETRY_PENDING", timeout=120)
    first = get_json(kubectl, "buildrun", "doomed-a1", "-n", ns)
    first_condition = succeeded(first)
    assert first_condition["status"] == "False"
    status = waiting["status"]
    # The reason and message are Shipwright's, from the real Pod's failure.
    assert status["lastErrorReason"] == first_condition["reason"]
    assert status["lastError"] == f"BuildRun doomed-a1: {first_condition['message']}"
    assert "exited with code 3" in json.dumps(
        get_json(kubectl, "taskrun", "-n", ns, f"-l={SHIPWRIGHT_BUILDRUN_LABEL}=doomed-a1")
    )
    _, pod = executor_objects(kubectl, ns, "doomed-a1")
    assert pod["status"]["phase"] == "Failed"
    assert {s["state"]["terminated"]["exitCode"] for s in pod["status"]["containerStatuses"]} == {3}
    # Backoff: the retry is scheduled backoffSeconds after the failure, and not started before.
    failed_at, retry_at = parse_time(status["lastErrorAt"]), parse_time(status["nextRetryAfter"])
    assert (retry_at - failed_at).total_seconds() == pytest.approx(backoff, abs=0.01)

    done = await wait_phase(api, ns, "doomed", "FAILED", timeout=120)
    second = get_json(kubectl, "buildrun", "doomed-a2", "-n", ns)
    second_created = parse_time(second["metadata"]["creationTimestamp"])
    assert second_created >= retry_at.replace(microsecond=0)  # API timestamps are whole seconds
    second_condition = succeeded(second)
    assert (done["status"]["attempt"], done["status"]["retryCount"]) == (2, 1)
    assert done["status"]["lastErrorReason"] == second_condition["reason"]
    assert done["status"]["lastError"] == f"BuildRun doomed-a2: {second_condition['message']}"


async def missing_strategy_workorder(api: KubeApi, ns: str, start_operator: Any) -> str:
    absent = f"absent-{secrets.token_hex(3)}"
    start_operator(ns)
    await create_workorder(
        api,
        ns,
        workorder(
            "orphan",
            yaml=build_yaml("orphan-build", absent, "ClusterBuildStrategy"),
            maxRetries=2,
            backoffSeconds=1,
        ),
    )
    return absent


async def test_missing_strategy_fails_the_attempt_with_shipwrights_registration_reason(
    api: KubeApi, build_namespace: str, kubectl: Kubectl, start_operator: Any
) -> None:
    ns = build_namespace
    absent = await missing_strategy_workorder(api, ns, start_operator)

    async def failed_once() -> Any:
        wo = await get_workorder(api, ns, "orphan")
        return wo if (wo.get("status") or {}).get("lastErrorReason") else None

    wo = await wait_for(failed_once, timeout=120, what="the first attempt to fail")
    build = get_json(kubectl, "build", "orphan-build", "-n", ns)
    assert (build["status"]["registered"], build["status"]["reason"]) == (
        "False",
        "ClusterBuildStrategyNotFound",
    )
    assert absent in build["status"]["message"]
    run = get_json(kubectl, "buildrun", "orphan-a1", "-n", ns)
    condition = succeeded(run)
    assert (condition["status"], condition["reason"]) == ("False", "BuildRegistrationFailed")
    assert wo["status"]["lastErrorReason"] == "BuildRegistrationFailed"
    assert "ClusterBuildStrategyNotFound" in wo["status"]["lastError"]
    # Shipwright never got as far as a TaskRun.
    assert get_json(kubectl, "taskrun", "-n", ns)["items"] == []


async def test_missing_strategy_is_not_retried(
    api: KubeApi, build_namespace: str, kubectl: Kubectl, start_operator: Any
) -> None:
    ns = build_namespace
    await missing_strategy_workorder(api, ns, start_operator)
    done = await wait_phase(api, ns, "orphan", "FAILED", timeout=120)
    # On failure, say why attempt 1 was retried: its reason is in the status and Events.
    events = kubectl("get", "events", "-n", ns, check=False).stdout
    assert (done["status"]["attempt"], done["status"]["retryCount"]) == (1, 0), (
        done["status"],
        events,
    )
    assert kubectl("get", "buildrun", "orphan-a2", "-n", ns, check=False).returncode != 0


async def test_a_build_run_failed_before_its_build_existed_is_made_again_not_retried(
    api: KubeApi, build_namespace: str, kubectl: Kubectl, start_operator: Any
) -> None:
    """Shipwright fails a BuildRun whose Build is not in its cache ("BuildNotFound"), which a
    BuildRun created just after its Build can meet. Such a BuildRun never ran, so it is not
    an attempt. Here the race is lost for sure: the WorkOrder's attempt-1 BuildRun exists
    before its Build does, made as the operator makes it."""
    ns = build_namespace
    kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(strategy("quick", {})))
    wo = await create_workorder(
        api, ns, workorder("early", yaml=build_yaml("early-build", "quick"), maxRetries=1)
    )
    first = adapter.build_run_spec(wo, "early-a1", "early-build", 1)
    kubectl("create", "-n", ns, "-f", "-", input=json.dumps(first))

    def refused() -> Any:
        run = get_json(kubectl, "buildrun", "early-a1", "-n", ns)
        conditions = (run.get("status") or {}).get("conditions") or []
        return run if any(c.get("reason") == "BuildNotFound" for c in conditions) else None

    early = await wait_for(refused, timeout=60, what="Shipwright to fail the early BuildRun")
    first_uid = early["metadata"]["uid"]
    start_operator(ns)
    done = await wait_phase(api, ns, "early", "SUCCEEDED", timeout=120)
    assert (done["status"]["attempt"], done["status"]["retryCount"]) == (1, 0), done["status"]
    run = get_json(kubectl, "buildrun", "early-a1", "-n", ns)
    assert run["metadata"]["uid"] != first_uid
    assert run["metadata"]["annotations"][adapter.ANNOTATION_RECREATED] == "BuildNotFound"
    assert succeeded(run)["status"] == "True"
    events = kubectl(
        "get", "events", "-n", ns, "--field-selector",
        "involvedObject.name=early,reason=BuildRunRecreated", "-o", "name",
    ).stdout  # fmt: skip
    assert len(events.split()) == 1, events


async def test_deleting_a_workorder_mid_run_removes_its_buildrun_taskrun_and_pod(
    api: KubeApi, build_namespace: str, kubectl: Kubectl, start_operator: Any
) -> None:
    ns = build_namespace
    slow = {kwok.COMPLETE_DELAY_ANNOTATION: "1h"}
    kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(strategy("slow", slow)))
    operator = start_operator(ns)
    await create_workorder(api, ns, workorder("busy", yaml=build_yaml("busy-build", "slow")))

    async def running() -> Any:
        got = kubectl("get", "pod", "-n", ns, "-o", "json", check=False)
        pods = json.loads(got.stdout)["items"] if got.returncode == 0 else []
        return pods if [p["status"].get("phase") for p in pods] == ["Running"] else None

    await wait_for(running, timeout=120, what="the build's Pod to run")

    async def run_in_progress() -> bool:  # Shipwright mirrors its TaskRun a moment later
        run = get_json(kubectl, "buildrun", "busy-a1", "-n", ns)
        conditions = (run.get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Succeeded" and c["status"] == "Unknown" for c in conditions)

    await wait_for(run_in_progress, timeout=60, what="BuildRun busy-a1 Succeeded=Unknown")
    task_run, pod = executor_objects(kubectl, ns, "busy-a1")

    async def claimed() -> bool:  # a build's first status waits a moment for its outcome
        return ((await get_workorder(api, ns, "busy")).get("status") or {}).get("phase") == (
            "CLAIMED"
        )

    await wait_for(claimed, timeout=30, what="WorkOrder busy CLAIMED")
    children = [
        ("buildrun", "busy-a1"),
        ("build", "busy-build"),
        ("lease", "busy-claim"),
        ("taskrun", task_run["metadata"]["name"]),
        ("pod", pod["metadata"]["name"]),
    ]

    async def present() -> list[tuple[str, str]]:
        return [
            (kind, name)
            for kind, name in children
            if kubectl("get", kind, name, "-n", ns, check=False).returncode == 0
        ]

    assert await present() == children

    kubectl("delete", "wo", "busy", "-n", ns, "--timeout=60s")

    async def all_gone() -> bool:
        return not await present()

    await wait_for(
        all_gone, timeout=90, interval=0.25, what="the garbage collector to remove the build"
    )
    assert operator.proc is not None and operator.proc.poll() is None, operator.log
