"""The operator's metrics, scraped over HTTP from `serve_metrics` on a loopback port."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import cast

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from workgate.k8s.api import KubeApi
from workgate.k8s.events import EventSink
from workgate.operator.metrics import (
    OperatorMetrics,
    WorkOrderRow,
    bound_port,
    serve_metrics,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.headers["Content-Type"], response.read().decode()


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the endpoint as {(name, sorted labels): value}."""
    status, content_type, text = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


class Served:
    def __init__(self, metrics: OperatorMetrics, port: int, rows: list[WorkOrderRow]) -> None:
        self.metrics, self.port, self.rows = metrics, port, rows

    async def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return await scrape(self.port)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    rows: list[WorkOrderRow] = []
    metrics = OperatorMetrics(CollectorRegistry(), workorders=lambda: rows)
    runner = await serve_metrics(0, metrics.registry, host="127.0.0.1")
    yield Served(metrics, bound_port(runner), rows)
    await runner.cleanup()


def L(**labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


async def test_workorders_gauge_counts_the_cache_at_scrape_time(served: Served) -> None:
    rows = served.rows
    rows += [
        ("a", "wo1", "build", "PENDING"),
        ("a", "wo2", "build", "CLAIMED"),
        ("b", "wo3", "build", "CLAIMED"),
        ("b", "wo4", "test", None),  # no status yet: counted as PENDING
    ]
    samples = await served.scrape()
    assert samples["workgate_workorders", L(work_type="build", phase="CLAIMED")] == 2
    assert samples["workgate_workorders", L(work_type="build", phase="PENDING")] == 1
    assert samples["workgate_workorders", L(work_type="test", phase="PENDING")] == 1
    # An emptied phase reads 0 rather than disappearing.
    assert samples["workgate_workorders", L(work_type="build", phase="SUCCEEDED")] == 0

    rows[1] = ("a", "wo2", "build", "SUCCEEDED")
    samples = await served.scrape()
    assert samples["workgate_workorders", L(work_type="build", phase="CLAIMED")] == 1
    assert samples["workgate_workorders", L(work_type="build", phase="SUCCEEDED")] == 1


async def test_a_successful_attempt(served: Served) -> None:
    m = served.metrics
    created, claimed, done = T0, T0 + timedelta(seconds=3), T0 + timedelta(seconds=70)
    m.record_transition("build", None, "PENDING", created, None, created)
    m.record_transition("build", "PENDING", "CLAIMED", created, claimed, claimed)
    m.record_transition("build", "CLAIMED", "CLAIMED", created, claimed, claimed)  # no-op
    m.record_transition("build", "CLAIMED", "SUCCEEDED", created, claimed, done)
    s = await served.scrape()
    assert s["workgate_queue_wait_seconds_count", L(work_type="build")] == 1
    assert s["workgate_queue_wait_seconds_sum", L(work_type="build")] == 3
    assert s["workgate_queue_wait_seconds_bucket", L(work_type="build", le="2.5")] == 0
    assert s["workgate_queue_wait_seconds_bucket", L(work_type="build", le="5.0")] == 1
    key = L(work_type="build", outcome="succeeded")
    assert s["workgate_attempt_duration_seconds_count", key] == 1
    assert s["workgate_attempt_duration_seconds_sum", key] == 67
    assert not any(name.startswith("workgate_retries_total") for name, _ in s)


async def test_retries_and_stale_claims(served: Served) -> None:
    m = served.metrics
    claimed = T0 + timedelta(seconds=1)
    m.record_transition(
        "test",
        "CLAIMED",
        "RETRY_PENDING",
        T0,
        claimed,
        T0 + timedelta(seconds=10),
        reason="ClaimTimedOut",
    )
    m.record_transition(
        "test", "CLAIMED", "RETRY_PENDING", T0, claimed, claimed, reason="ExitCode1"
    )
    m.record_transition("test", "CLAIMED", "FAILED", T0, claimed, claimed, reason="ExitCode1")
    m.record_transition(
        "test", "CLAIMED", "RETRY_PENDING", T0, claimed, claimed, reason="not a reason!"
    )
    s = await served.scrape()
    assert s["workgate_retries_total", L(work_type="test", reason="ClaimTimedOut")] == 1
    assert s["workgate_retries_total", L(work_type="test", reason="ExitCode1")] == 1
    assert s["workgate_retries_total", L(work_type="test", reason="Other")] == 1
    assert s["workgate_stale_claims_total", L(work_type="test")] == 1
    assert s["workgate_attempt_duration_seconds_count", L(work_type="test", outcome="failed")] == 4


async def test_reason_labels_are_bounded() -> None:
    m = OperatorMetrics(reason_limit=2)
    for reason in ["A", "B", "C", "D", "A"]:
        m.record_retry("x", reason)
    value = m.registry.get_sample_value
    assert value("workgate_retries_total", {"work_type": "x", "reason": "A"}) == 2
    assert value("workgate_retries_total", {"work_type": "x", "reason": "B"}) == 1
    assert value("workgate_retries_total", {"work_type": "x", "reason": "Other"}) == 2


async def test_negative_durations_from_clock_skew_count_as_zero() -> None:
    m = OperatorMetrics()
    m.record_attempt("build", "succeeded", T0, T0 - timedelta(seconds=5))
    m.record_attempt("build", "succeeded", None, T0)  # unknown start: not observed
    labels = {"work_type": "build", "outcome": "succeeded"}
    assert m.registry.get_sample_value("workgate_attempt_duration_seconds_count", labels) == 1
    assert m.registry.get_sample_value("workgate_attempt_duration_seconds_sum", labels) == 0


async def test_waitpoints_signals_and_reconciles(served: Served) -> None:
    m = served.metrics
    m.record_waitpoint_closed("Satisfied", T0, T0 + timedelta(minutes=20))
    m.record_waitpoint_closed("Cancelled", None, T0)  # never activated: nothing to observe
    m.record_signal(True, "Accepted")
    m.record_signal(False, "BadProof")
    m.record_signal(False, "BadProof")
    with m.time_reconcile("workorder"):
        pass
    with pytest.raises(RuntimeError), m.time_reconcile("workorder"):
        raise RuntimeError("boom")

    async def cancelled() -> None:
        with m.time_reconcile("signal"):
            await asyncio.sleep(10)

    task = asyncio.create_task(cancelled())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    s = await served.scrape()
    assert s["workgate_waitpoint_wait_seconds_count", L(close_reason="Satisfied")] == 1
    assert s["workgate_waitpoint_wait_seconds_sum", L(close_reason="Satisfied")] == 1200
    assert ("workgate_waitpoint_wait_seconds_count", L(close_reason="Cancelled")) not in s
    assert s["workgate_signals_total", L(result="accepted", reason="Accepted")] == 1
    assert s["workgate_signals_total", L(result="refused", reason="BadProof")] == 2
    assert s["workgate_reconcile_duration_seconds_count", L(kind="workorder")] == 2
    assert s["workgate_reconcile_errors_total", L(kind="workorder")] == 1
    assert ("workgate_reconcile_duration_seconds_count", L(kind="signal")) not in s


async def test_registry_is_private_and_the_server_stops() -> None:
    from prometheus_client import REGISTRY

    m = OperatorMetrics()
    m.record_stale_claim("build")
    assert REGISTRY.get_sample_value("workgate_stale_claims_total", {"work_type": "build"}) is None
    OperatorMetrics()  # a second instance does not collide with the first

    runner = await serve_metrics(0, m.registry, host="127.0.0.1")
    port = bound_port(runner)
    samples = await scrape(port)
    assert samples["workgate_stale_claims_total", L(work_type="build")] == 1
    await runner.cleanup()
    with pytest.raises(OSError):
        await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")


async def test_a_taken_port_is_an_error_and_leaks_nothing() -> None:
    runner = await serve_metrics(0, CollectorRegistry(), host="127.0.0.1")
    try:
        with pytest.raises(OSError):
            await serve_metrics(bound_port(runner), CollectorRegistry(), host="127.0.0.1")
    finally:
        await runner.cleanup()


async def test_events_dropped_with_a_full_queue_are_counted(served: Served) -> None:
    """The EventSink's tallies, as the operator wires them (operator/main.py): a queue of
    one holds the first Event and drops the next two, and the scrape says so."""
    sink = EventSink(cast(KubeApi, None), instance="test", capacity=1)
    served.metrics.set_event_source(lambda: (sink.posted, sink.failed, sink.dropped))
    involved = {
        "apiVersion": "workgate.io/v1alpha1",
        "kind": "WorkOrder",
        "metadata": {"name": "wo", "namespace": "a", "uid": "u1", "resourceVersion": "1"},
    }
    for n in range(3):
        sink.post(involved, "Normal", "Test", f"event {n}")
    samples = await served.scrape()
    assert samples["workgate_events_total", L(result="dropped")] == 2
    assert samples["workgate_events_total", L(result="posted")] == 0
    assert samples["workgate_events_total", L(result="refused")] == 0
