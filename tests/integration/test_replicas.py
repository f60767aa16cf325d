"""Several operator replicas at once: one webhook certificate, work shared, nothing twice."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import Counter
from typing import Any

import pytest

from tests.integration.conftest import (
    create_workorder,
    finish_build_run,
    free_port,
    list_items,
    wait_for,
    workorder,
)
from workgate.k8s.api import BUILDRUNS, SECRETS, WORKORDERS, KubeApi

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
    await asyncio.gather(
        *(create_workorder(api, namespace, workorder(f"job-{i:02d}")) for i in range(total))
    )
    finished: set[str] = set()

    async def all_done() -> bool:
        for run in await list_items(api, BUILDRUNS.path(namespace)):
            name = run["metadata"]["name"]
            if name not in finished:
                await finish_build_run(api, namespace, name, succeeded=True)
                finished.add(name)
        items = await list_items(api, WORKORDERS.path(namespace))
        return len(items) == total and all(
            (w.get("status") or {}).get("phase") == "SUCCEEDED" for w in items
        )

    await wait_for(all_done, timeout=90, interval=0.2, what="all SUCCEEDED")
    runs = await list_items(api, BUILDRUNS.path(namespace))
    assert len(runs) == total  # one BuildRun per attempt, though two replicas reconciled
    items = await list_items(api, WORKORDERS.path(namespace))
    assert {w["status"]["attempt"] for w in items} == {1}
    events = await list_items(api, f"/api/v1/namespaces/{namespace}/events")
    claimers = Counter(e["message"].rsplit(" ", 1)[-1] for e in events if e["reason"] == "Claimed")
    assert sum(claimers.values()) == total
    assert all(op.proc.poll() is None for op in replicas)
