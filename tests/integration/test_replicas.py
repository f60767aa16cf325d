"""Several operator replicas at once: one webhook certificate, work shared, nothing twice,
nothing lost when one dies. Who did what is read from the API server's record (the Leases
and BuildRuns as they were created, watched by the test), not from the operators' status."""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
from collections import Counter
from typing import Any

import pytest

from tests.integration.conftest import (
    create_workorder,
    free_port,
    list_items,
    wait_for,
    workorder,
)
from tests.integration.evidence import ShipwrightStandIn, WatchRecorder, owner_name
from workgate.core.claims import ANNOTATION_INSTANCE
from workgate.k8s.api import BUILDRUNS, LEASES, NAMESPACES, SECRETS, WORKORDERS, Body, KubeApi

pytestmark = pytest.mark.integration


def served_certificate(port: int) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


async def test_two_replicas_share_the_webhook_certificate_and_the_work(
    api: KubeApi, namespace: str, start_operator: Any, kubectl: Any
) -> None:
    secret_name = f"webhook-tls-{namespace}"[:63]
    ports = [free_port(), free_port()]
    replicas = [
        start_operator(
            namespace,
            webhook=True,
            WORKGATE_WEBHOOK_PORT=str(port),
            WORKGATE_WEBHOOK_CERT_SECRET=secret_name,
            WORKGATE_OPERATOR_NAMESPACE=namespace,
            WORKGATE_IDENTITY=f"workgate-operator/replica-{i}",
        )
        for i, port in enumerate(ports)
    ]
    await wait_for(lambda: api.get(SECRETS.path(namespace, secret_name)), what="shared cert Secret")

    async def both_serving() -> bool:
        try:
            return all(
                await asyncio.gather(*(asyncio.to_thread(served_certificate, p) for p in ports))
            )
        except OSError:
            return False

    await wait_for(both_serving, timeout=30, what="both webhook servers")
    first, second = await asyncio.gather(*(asyncio.to_thread(served_certificate, p) for p in ports))
    assert first == second  # whichever replica the API server calls, it trusts the CA

    total = 30
    async with (
        WatchRecorder(api, LEASES.path(namespace)) as leases,
        WatchRecorder(api, BUILDRUNS.path(namespace)) as runs,
        ShipwrightStandIn(api, namespace, runs) as shipwright,
    ):
        await asyncio.gather(
            *(create_workorder(api, namespace, workorder(f"job-{i:02d}")) for i in range(total))
        )
        await wait_for(
            lambda: all_in_phase(api, namespace, total, "SUCCEEDED"),
            timeout=90,
            interval=0.2,
            what="all SUCCEEDED",
        )
        await runs.caught_up()
        shipwright.check()
    identities = {f"workgate-operator/replica-{i}" for i in range(len(replicas))}
    # Both replicas won claims: the holders of the Leases as the API server created them
    # (one replica doing all the work fails here).
    holders = Counter(holder(e.body) for e in leases.added())
    assert set(holders) == identities and min(holders.values()) >= 1, holders
    assert {owner_name(e.body) for e in leases.added()} == {f"job-{i:02d}" for i in range(total)}
    # One execution per WorkOrder though two replicas reconciled each: one BuildRun ever
    # created per WorkOrder (a deleted-and-recreated or second-attempt run shows here).
    assert_one_build_run_each(runs, total)
    items = await list_items(api, WORKORDERS.path(namespace))
    assert {(w["status"]["attempt"], w["status"]["retryCount"]) for w in items} == {(1, 0)}
    assert all(op.proc is not None and op.proc.poll() is None for op in replicas)


async def test_killing_one_replica_loses_nothing(
    api: KubeApi, namespace: str, start_operator: Any
) -> None:
    """Two replicas share 30 WorkOrders; one is SIGKILLed while it holds claims (before any
    BuildRun has finished); 10 more arrive after. The survivor finishes all 40 — including
    the dead replica's claims, whose Leases would not go stale for an hour — on attempt 1."""
    victim, survivor = (
        start_operator(namespace, WORKGATE_IDENTITY=f"workgate-operator/replica-{i}")
        for i in range(2)
    )
    first, later = 30, 10

    async def both_watching() -> bool:  # else the first one up claims everything
        return all("watches synced" in op.log for op in (victim, survivor))

    try:  # in the full suite's crowded plane the first lists have taken over 60 s
        await wait_for(both_watching, timeout=180, what="both replicas watching")
    except AssertionError:
        for op in (victim, survivor):
            print(f"--- {op!r} log tail:\n{op.log[-3000:]}")
        raise
    async with (
        WatchRecorder(api, LEASES.path(namespace)) as leases,
        WatchRecorder(api, BUILDRUNS.path(namespace)) as runs,
    ):
        await asyncio.gather(
            *(create_workorder(api, namespace, workorder(f"job-{i:02d}")) for i in range(first))
        )

        def claims_of(identity: str) -> set[str | None]:
            return {owner_name(e.body) for e in leases.added() if holder(e.body) == identity}

        victim_identity = victim.env["WORKGATE_IDENTITY"]
        survivor_identity = survivor.env["WORKGATE_IDENTITY"]

        async def both_claimed() -> bool:
            leases.check()
            return bool(claims_of(victim_identity)) and bool(claims_of(survivor_identity))

        await wait_for(both_claimed, timeout=60, what="claims by both replicas")
        assert victim.proc is not None and victim.proc.poll() is None
        victim.kill()
        assert victim.proc.returncode == -signal.SIGKILL
        orphaned = claims_of(victim_identity)
        await asyncio.gather(
            *(
                create_workorder(api, namespace, workorder(f"job-{i:02d}"))
                for i in range(first, first + later)
            )
        )
        async with ShipwrightStandIn(api, namespace, runs) as shipwright:
            await wait_for(
                lambda: all_in_phase(api, namespace, first + later, "SUCCEEDED"),
                timeout=90,
                interval=0.2,
                what="all SUCCEEDED after the kill",
            )
            await runs.caught_up()
            shipwright.check()
    items = {w["metadata"]["name"]: w for w in await list_items(api, WORKORDERS.path(namespace))}
    # The Leases left are the records of the attempts that ran: one per WorkOrder, its own.
    leases = await list_items(api, LEASES.path(namespace))
    assert sorted(lease["metadata"]["ownerReferences"][0]["uid"] for lease in leases) == sorted(
        w["metadata"]["uid"] for w in items.values()
    )
    # Nothing lost: what the dead replica held is done, without a retry (no ClaimTimedOut).
    assert orphaned and all(items[name]["status"]["phase"] == "SUCCEEDED" for name in orphaned)
    assert {(w["status"]["attempt"], w["status"]["retryCount"]) for w in items.values()} == {(1, 0)}
    # ...and nothing done twice: one BuildRun ever created per WorkOrder.
    assert_one_build_run_each(runs, first + later)
    assert survivor.proc is not None and survivor.proc.poll() is None


def holder(body: Body) -> str | None:
    """Which replica created the claim: replicas share one user (the holderIdentity), so
    each names itself in the instance annotation."""
    value = ((body.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_INSTANCE)
    return str(value) if value is not None else None


def assert_one_build_run_each(runs: WatchRecorder, total: int) -> None:
    created = runs.added()
    per_owner = Counter(owner_name(e.body) for e in created)
    assert per_owner == {f"job-{i:02d}": 1 for i in range(total)}, per_owner
    assert len({e.uid for e in created}) == total
    assert {e.name for e in created} == {f"job-{i:02d}-a1" for i in range(total)}
    assert runs.of("DELETED") == []


async def all_in_phase(api: KubeApi, namespace: str, total: int, phase: str) -> bool:
    items = await list_items(api, WORKORDERS.path(namespace))
    return len(items) == total and all((w.get("status") or {}).get("phase") == phase for w in items)


async def test_an_operator_started_while_its_namespace_is_deleted_waits_then_starts(
    api: KubeApi, namespace: str, start_operator: Any, kubectl: Any
) -> None:
    """An uninstall not yet finished (its namespace Terminating, held by a finalizer) and
    an operator started meanwhile: it says why it waits, and once the namespace is gone it
    creates it and its key Secret anew and runs — it does not exit."""
    system = f"{namespace}-sys"[:63]
    hold = "workgate.io/test-hold"
    kubectl("create", "namespace", system)
    try:
        kubectl("create", "configmap", "hold", "-n", system)
        kubectl("patch", "configmap", "hold", "-n", system, "--type=merge",
                "-p", f'{{"metadata":{{"finalizers":["{hold}"]}}}}')  # fmt: skip
        kubectl("delete", "namespace", system, "--wait=false")

        async def terminating() -> bool:
            ns = await api.get(NAMESPACES.path(name=system))
            return bool(ns.get("status", {}).get("phase") == "Terminating")

        await wait_for(terminating, what=f"namespace {system} Terminating")
        op = start_operator(namespace, WORKGATE_OPERATOR_NAMESPACE=system)
        await wait_for(lambda: "trying again" in op.log, timeout=60, what="the wait logged")
        assert op.proc is not None and op.proc.poll() is None, op.log
        kubectl("patch", "configmap", "hold", "-n", system, "--type=merge",
                "-p", '{"metadata":{"finalizers":null}}')  # fmt: skip
        await wait_for(lambda: "watches synced" in op.log, timeout=120, what="started")
        secret = await api.get(SECRETS.path(system, "workgate-token-key"))
        assert secret["data"], secret
        assert "Traceback" not in op.log, op.log
    finally:
        kubectl("patch", "configmap", "hold", "-n", system, "--type=merge",
                "-p", '{"metadata":{"finalizers":null}}', check=False)  # fmt: skip
        kubectl("delete", "namespace", system, "--wait=false", "--ignore-not-found", check=False)
