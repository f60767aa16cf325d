"""Events sent in the background, and what one signal costs the API server."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from typing import Any

import pytest

from tests.integration.conftest import (
    create_workorder,
    free_port,
    list_items,
    scrape_metrics,
    start_with_webhook,
    wait_for,
    wait_phase,
    workorder,
)
from tests.integration.test_waitpoints import gate, wait_wp
from workgate.cli.kubectl_plugin import prepare_signal
from workgate.k8s.api import EVENTS, SIGNALS, Body, KubeApi, ResourceRef
from workgate.k8s.events import EventSink

pytestmark = pytest.mark.integration
CONFIGMAPS = ResourceRef("", "v1", "configmaps")
METRIC = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+]+)$")


async def quiet(api: KubeApi, kinds: tuple[str, ...], timeout: float = 30) -> None:
    """Until two looks 0.5 s apart see no request for `kinds`: the operator has finished
    with what it just made (the counts these tests assert are the server's, not a client's)."""
    before = await served(api)

    async def still() -> bool:
        nonlocal before
        await asyncio.sleep(0.5)
        now = await served(api)
        busy = any(key.split(" ")[1].split("/")[0] in kinds for key in now - before)
        before = now
        return not busy

    await wait_for(still, timeout=timeout, what=f"no requests for {kinds}")


async def served(api: KubeApi) -> Counter[str]:
    """`VERB resource[/sub]` -> requests the API server has served, by its own counters."""
    counts: Counter[str] = Counter()
    for line in (await api.get_text("/metrics")).splitlines():
        match = METRIC.match(line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
            sub = f"/{labels['subresource']}" if labels.get("subresource") else ""
            counts[f"{labels.get('verb')} {labels.get('resource', '')}{sub}"] += int(
                float(match["value"])
            )
    return counts


async def reasons(api: KubeApi, namespace: str, name: str) -> list[str]:
    events = await list_items(
        api, EVENTS.path(namespace), fieldSelector=f"involvedObject.name={name}"
    )
    return sorted(e["reason"] for e in events)


async def test_the_event_sink_sends_in_the_background_and_drops_what_does_not_fit(
    api: KubeApi, namespace: str
) -> None:
    involved = await api.create(
        CONFIGMAPS.path(namespace), {"metadata": {"name": "subject"}, "data": {}}
    )
    involved = {"apiVersion": "v1", "kind": "ConfigMap", **involved}
    sink = EventSink(api, instance="test", capacity=3, senders=1)
    for i in range(5):
        sink.post(involved, "Normal", f"Step{i}", f"step {i}")  # never waits
    assert (sink.queue.qsize(), sink.dropped, sink.posted) == (3, 2, 0)
    assert await reasons(api, namespace, "subject") == []  # nothing sent before run()
    elsewhere = {**involved, "metadata": {**involved["metadata"], "namespace": "t-no-such-ns"}}
    running = asyncio.create_task(sink.run())
    try:

        async def sent() -> list[str] | None:
            seen = await reasons(api, namespace, "subject")
            return seen if len(seen) == 3 else None

        # The first three, not the two that did not fit.
        assert await wait_for(sent, what="3 Events") == ["Step0", "Step1", "Step2"]
        assert sink.posted == 3
        sink.post(elsewhere, "Warning", "Lost", "its namespace does not exist")
        await sink.flush(30)
        assert (sink.posted, sink.failed, sink.queue.qsize()) == (3, 1, 0)
    finally:
        running.cancel()
    event = (await list_items(api, EVENTS.path(namespace)))[0]
    assert event["involvedObject"]["uid"] == involved["metadata"]["uid"]
    assert event["reportingInstance"] == "test" and event["count"] == 1


async def test_one_signal_asks_rbac_once_and_its_events_follow(
    api: KubeApi, namespace: str, start_operator: Any
) -> None:
    """With the webhook on, the SubjectAccessReview admission made for a Signal is the
    controller's too (operator/judging.Permits); the reviewer's flow reads the waitpoint
    and its token Secret once each (at once: the Secret must be controlled by that
    waitpoint's uid); and each transition still gets its Event."""
    metrics_port = str(free_port())
    await start_with_webhook(start_operator, api, namespace, WORKGATE_METRICS_PORT=metrics_port)
    await create_workorder(
        api, namespace, workorder("one", "deploy", yaml="a: 1\n", gates=[gate("go")])
    )
    await wait_phase(api, namespace, "one", "WAITING")
    await wait_wp(api, namespace, "one.go", "active")
    await quiet(api, ("waitpoints", "secrets"))  # the operator's last status write is done

    before = await served(api)
    body: Body = await prepare_signal(api, namespace, "one.go", "approve")
    prepared = await served(api) - before
    assert prepared["GET waitpoints"] == 1 and prepared["GET secrets"] >= 1, prepared
    assert prepared["POST selfsubjectreviews"] == 1, prepared

    before = await served(api)
    created = await api.create(SIGNALS.path(namespace), body)
    await wait_phase(api, namespace, "one", "PENDING")

    async def marked() -> Body | None:
        signal = await api.get(SIGNALS.path(namespace, created["metadata"]["name"]))
        return signal if (signal.get("status") or {}).get("phase") else None

    assert (await wait_for(marked, what="the Signal judged"))["status"]["phase"] == "Accepted"
    judged = await served(api) - before
    # Admission's review, and no second one by the controller (the same process admitted it).
    assert judged["POST subjectaccessreviews"] == 1, judged

    async def described(name: str, wanted: set[str]) -> list[str] | None:
        seen = await reasons(api, namespace, name)
        return seen if wanted <= set(seen) else None

    wp_events = await wait_for(lambda: described("one.go", {"SignalAccepted", "Satisfied"}))
    assert wp_events.count("SignalAccepted") == 1 and wp_events.count("Satisfied") == 1
    wo_events = await wait_for(lambda: described("one", {"Waiting", "GatesPassed"}))
    assert wo_events.count("GatesPassed") == 1, wo_events

    # The operator's metrics count what its sink sent (workgate_events_total).
    text = await asyncio.to_thread(scrape_metrics, f"http://127.0.0.1:{metrics_port}/metrics")
    counts = {
        m[1]: float(m[2])
        for m in re.finditer(r'^workgate_events_total\{result="(\w+)"\} (\S+)', text, re.M)
    }
    assert counts["posted"] >= len(wp_events) + len(wo_events), (counts, wp_events, wo_events)
    assert counts["dropped"] == 0 and counts["refused"] == 0, counts
