"""What each kind of request a WorkOrder's life makes costs the API server, in its CPU.
Prints figures, asserts nothing.

    python bench/request_cost.py [--requests 1000]

Uses $KUBECONFIG if set, else a bare embedded plane started for this run (no operator, no
controllers of workgate's: only the requests themselves). For each kind it sends
`--requests` requests at concurrency 16 into a namespace of its own and prints the API
server's CPU per request (from /proc, so only on an embedded plane) and the rate: the
creates of a build item's children, the status writes, and built-in kinds beside them.
Why the operator writes a build's status once where it can (a WorkOrder status write is
the dearest of them).
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from _common import cluster, plane_pids, workorder
from _processes import cpu_seconds

from workgate.k8s.api import BUILDRUNS, BUILDS, NAMESPACES, WORKORDERS, KubeApi

NOW = "2026-12-03T12:00:00.123456Z"
CLAIMANT = "system:serviceaccount:workgate-system:workgate"


def condition(type_: str, status: str, reason: str) -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "observedGeneration": 1,
        "lastTransitionTime": NOW,
        "reason": reason,
        "message": f"the WorkOrder is {reason}",
    }


CLAIMED = {
    "phase": "CLAIMED",
    "attempt": 1,
    "retryCount": 0,
    "claimedBy": CLAIMANT,
    "claimedAt": NOW,
    "leaseName": "x-claim",
    "buildRunName": "x-a1",
    "startTime": NOW,
    "observedGeneration": 1,
    "conditions": [
        condition("Reconciling", "True", "Claimed"),
        condition("Ready", "False", "Claimed"),
        condition("Claimed", "True", "Claimed"),
    ],
}
SUCCEEDED = {
    **CLAIMED,
    "phase": "SUCCEEDED",
    "completedAt": NOW,
    "conditions": [
        condition("Succeeded", "True", "Succeeded"),
        condition("Ready", "True", "Succeeded"),
        condition("Claimed", "False", "Released"),
    ],
}


async def measure(
    label: str, requests: int, pid: int | None, send: Callable[[int], Awaitable[Any]]
) -> None:
    gate = asyncio.Semaphore(16)

    async def one(i: int) -> None:
        async with gate:
            await send(i)

    cpu, start = cpu_seconds(pid) if pid else 0.0, time.monotonic()
    await asyncio.gather(*(one(i) for i in range(requests)))
    seconds = time.monotonic() - start
    per = f"{1000 * (cpu_seconds(pid) - cpu) / requests:5.2f} ms" if pid else "   n/a"
    print(
        f"  {label:36s} {per} API server CPU per request, {requests / seconds:6.0f}/s", flush=True
    )


async def main(requests: int) -> None:
    pid = plane_pids().get("kube-apiserver")
    async with KubeApi(client="workgate-bench") as api:
        ns = f"bench-cost-{uuid.uuid4().hex[:6]}"
        await api.create(NAMESPACES.path(), {"metadata": {"name": ns}})
        try:
            await run(api, ns, requests, pid)
        finally:
            await api.delete(NAMESPACES.path(None, ns))


async def run(api: KubeApi, ns: str, n: int, pid: int | None) -> None:
    uids: dict[int, str] = {}
    core, coord = f"/api/v1/namespaces/{ns}", f"/apis/coordination.k8s.io/v1/namespaces/{ns}"

    def owner(i: int) -> list[dict[str, Any]]:
        return [{"apiVersion": "workgate.io/v1alpha1", "kind": "WorkOrder", "name": f"w{i}",
                 "uid": uids[i], "controller": True, "blockOwnerDeletion": True}]  # fmt: skip

    async def create_workorder(i: int) -> None:
        uids[i] = (await api.create(WORKORDERS.path(ns), workorder(f"w{i}", "build")))["metadata"][
            "uid"
        ]

    def build(i: int) -> dict[str, Any]:
        return {"apiVersion": "shipwright.io/v1beta1", "kind": "Build",
                "metadata": {"name": f"w{i}", "ownerReferences": owner(i)},
                "spec": {"source": {"type": "Git", "git": {"url": "https://git.example.com/app"}},
                         "strategy": {"name": "buildah", "kind": "ClusterBuildStrategy"},
                         "output": {"image": "registry.example.com/app:latest"}}}  # fmt: skip

    def build_run(i: int) -> dict[str, Any]:
        return {"apiVersion": "shipwright.io/v1beta1", "kind": "BuildRun",
                "metadata": {"name": f"w{i}-a1", "annotations": {"workgate.io/attempt": "1"},
                             "ownerReferences": owner(i)},
                "spec": {"build": {"name": f"w{i}"}}}  # fmt: skip

    done = {"status": {"conditions": [{"type": "Succeeded", "status": "True", "reason": "Succeeded",
                                       "message": "done", "lastTransitionTime": NOW}]}}  # fmt: skip
    print(f"{n} requests of each kind, 16 at a time:", flush=True)
    await measure("POST configmaps", n, pid, lambda i: api.create(
        f"{core}/configmaps", {"metadata": {"name": f"c{i}"}, "data": {"a": "b"}}))  # fmt: skip
    await measure("POST events", n, pid, lambda i: api.create(f"{core}/events", {
        "metadata": {"name": f"e{i}"}, "reason": "Succeeded", "message": "m", "type": "Normal",
        "involvedObject": {"kind": "WorkOrder", "name": f"w{i}", "namespace": ns}}))  # fmt: skip
    await measure("POST leases", n, pid, lambda i: api.create(f"{coord}/leases", {
        "metadata": {"name": f"l{i}"}, "spec": {"holderIdentity": CLAIMANT}}))  # fmt: skip
    await measure("POST workorders", n, pid, create_workorder)
    await measure("POST builds", n, pid, lambda i: api.create(BUILDS.path(ns), build(i)))
    await measure("POST buildruns", n, pid, lambda i: api.create(BUILDRUNS.path(ns), build_run(i)))
    await measure("PATCH buildruns/status (Succeeded)", n, pid, lambda i: api.merge_patch(
        BUILDRUNS.path(ns, f"w{i}-a1", "status"), done))  # fmt: skip
    for label, status in (("CLAIMED", CLAIMED), ("SUCCEEDED", SUCCEEDED)):
        patch = {"status": status}
        await measure(f"PATCH workorders/status ({label})", n, pid, lambda i, p=patch: (
            api.merge_patch(WORKORDERS.path(ns, f"w{i}", "status"), p)))  # fmt: skip
    await measure(
        "GET workorders (a read)", n, pid, lambda i: api.get(WORKORDERS.path(ns, f"w{i}"))
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    with cluster() as where:
        print(f"measuring on {where}", flush=True)
        asyncio.run(main(args.requests))
