"""Prometheus metrics of the operator, on a registry of their own.

The operator owns one `OperatorMetrics`; the reconcilers call its `record_*` methods at
the moments they describe (most often: once per status write, with the old and the new
phase), and `serve_metrics` exposes the registry over HTTP at `/metrics`.

A dedicated `CollectorRegistry` (not prometheus_client's global one) keeps tests and
several operators in one process from sharing or double-registering series.

Metrics (all prefixed `workgate_`):

- `workorders{work_type, phase}`: gauge, WorkOrders in the operator's cache, counted at
  scrape time from a callback (so it can never drift from the cache).
- `queue_wait_seconds{work_type}`: histogram, from claimable (created, or retry due) to claimed.
- `attempt_duration_seconds{work_type, outcome}`: histogram, from claimed to the attempt's end.
- `retries_total{work_type, reason}`: counter, attempts that failed and were scheduled again.
- `stale_claims_total{work_type}`: counter, claims that timed out without renewal.
- `waitpoint_wait_seconds{close_reason}`: histogram, from activation to close.
- `signals_total{result, reason}`: counter, signals accepted or refused, by reason.
- `reconcile_errors_total{kind}`: counter, reconciles that raised.
- `reconcile_duration_seconds{kind}`: histogram, time per reconcile.
"""

from __future__ import annotations

import re
import time
from collections import Counter as _Tally
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from workgate.api.workorder import Phase

PREFIX = "workgate"

# (namespace, name, work_type, phase) of every cached WorkOrder; phase None = no status yet.
WorkOrderRow = tuple[str, str, str, str | None]
WorkOrderSource = Callable[[], Iterable[WorkOrderRow]]
EventSource = Callable[[], tuple[int, int, int]]  # Events posted, refused, dropped

# Phases an attempt ends in (leaving CLAIMED), and the outcome label each gives.
_ATTEMPT_OUTCOMES = {
    Phase.SUCCEEDED.value: "succeeded",
    Phase.FAILED.value: "failed",
    Phase.RETRY_PENDING.value: "failed",
    Phase.CANCELLED.value: "cancelled",
}
STALE_CLAIM_REASON = "ClaimTimedOut"
OTHER = "Other"

# Seconds to days: queue waits and attempts range from instant local builds to long agent
# jobs; waitpoints wait for people.
_WAIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600,
                 7200, 21600, 86400)  # fmt: skip
_HUMAN_BUCKETS = (1, 10, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800,
                  604800, 2592000)  # fmt: skip
_RECONCILE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

_REASON = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


class _BoundedLabel:
    """Pass label values through until `limit` distinct ones were seen, then `Other`.

    Reasons come partly from agents (the Lease's error-reason annotation), so their set
    is open: without a bound, one misbehaving agent could create unbounded series.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen: set[str] = set()

    def __call__(self, value: str | None) -> str:
        if not value or not _REASON.match(value):
            return OTHER
        if value in self.seen:
            return value
        if len(self.seen) >= self.limit:
            return OTHER
        self.seen.add(value)
        return value


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    """end - start in seconds; negative (clock skew between claimants) counts as 0."""
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


class _WorkOrderCollector(Collector):
    """`workgate_workorders{work_type, phase}` from the callback, at scrape time."""

    NAME = f"{PREFIX}_workorders"
    HELP = "WorkOrders in the operator's cache, by work type and phase."

    def __init__(self, source: WorkOrderSource | None) -> None:
        self.source = source

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return [GaugeMetricFamily(self.NAME, self.HELP, labels=["work_type", "phase"])]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(self.NAME, self.HELP, labels=["work_type", "phase"])
        counts: _Tally[tuple[str, str]] = _Tally()
        work_types: set[str] = set()
        for _namespace, _name, work_type, phase in self.source() if self.source else ():
            work_types.add(work_type)
            counts[work_type, phase or Phase.PENDING.value] += 1
        # Every phase of every seen work type, zeros included: a phase that empties must
        # read 0, not vanish (a vanished series keeps its last value in many dashboards).
        phases = [p.value for p in Phase]
        phases += sorted({phase for _, phase in counts} - set(phases))
        for work_type in sorted(work_types):
            for phase in phases:
                family.add_metric([work_type, phase], counts[work_type, phase])
        yield family


class _EventCollector(Collector):
    """`workgate_events_total{result}`: the Events the background sender created, the API
    server refused, and dropped unsent because its queue was full (k8s/events.py)."""

    NAME = f"{PREFIX}_events"
    HELP = "Kubernetes Events the operator created, had refused, or dropped with its queue full."

    def __init__(self) -> None:
        self.source: EventSource | None = None

    def describe(self) -> Iterable[CounterMetricFamily]:
        return [CounterMetricFamily(self.NAME, self.HELP, labels=["result"])]

    def collect(self) -> Iterable[CounterMetricFamily]:
        family = CounterMetricFamily(self.NAME, self.HELP, labels=["result"])
        posted, failed, dropped = self.source() if self.source else (0, 0, 0)
        for result, value in (("posted", posted), ("refused", failed), ("dropped", dropped)):
            family.add_metric([result], value)
        yield family


class OperatorMetrics:
    """The operator's metrics. Every method is cheap and synchronous: call it inline."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        workorders: WorkOrderSource | None = None,
        reason_limit: int = 50,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._workorders = _WorkOrderCollector(workorders)
        self.registry.register(self._workorders)
        self._events = _EventCollector()
        self.registry.register(self._events)
        self._reason = _BoundedLabel(reason_limit)
        self._signal_reason = _BoundedLabel(reason_limit)
        r = self.registry
        self.queue_wait = Histogram(
            f"{PREFIX}_queue_wait_seconds",
            "Time from a WorkOrder becoming claimable (created, or its retry due) to its claim.",
            ["work_type"],
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.attempt_duration = Histogram(
            f"{PREFIX}_attempt_duration_seconds",
            "Time from an attempt's claim to its end, by outcome (succeeded or failed).",
            ["work_type", "outcome"],
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            f"{PREFIX}_retries",
            "Attempts that failed and were scheduled for a retry, by failure reason.",
            ["work_type", "reason"],
            registry=r,
        )
        self.stale_claims = Counter(
            f"{PREFIX}_stale_claims",
            "Claims whose Lease was not renewed within the claim timeout.",
            ["work_type"],
            registry=r,
        )
        self.waitpoint_wait = Histogram(
            f"{PREFIX}_waitpoint_wait_seconds",
            "Time from a waitpoint's activation to its close, by close reason.",
            ["close_reason"],
            buckets=_HUMAN_BUCKETS,
            registry=r,
        )
        self.signals = Counter(
            f"{PREFIX}_signals",
            "Signals the operator accepted or refused, by reason.",
            ["result", "reason"],
            registry=r,
        )
        self.reconcile_errors = Counter(
            f"{PREFIX}_reconcile_errors",
            "Reconciles that ended with an unexpected error (they are retried).",
            ["kind"],
            registry=r,
        )
        self.reconcile_duration = Histogram(
            f"{PREFIX}_reconcile_duration_seconds",
            "Wall time of one reconcile, including its API calls.",
            ["kind"],
            buckets=_RECONCILE_BUCKETS,
            registry=r,
        )

    def set_event_source(self, source: EventSource) -> None:
        """Where the `events` counters read from (the EventSink's tallies)."""
        self._events.source = source

    def set_workorder_source(self, source: WorkOrderSource) -> None:
        """Where the `workorders` gauge counts from (e.g. the reconciler's cache)."""
        self._workorders.source = source

    # --- WorkOrders -----------------------------------------------------------------

    def record_transition(
        self,
        work_type: str,
        old_phase: str | None,
        new_phase: str | None,
        created_at: datetime | None,
        claimed_at: datetime | None,
        now: datetime,
        *,
        reason: str | None = None,
    ) -> None:
        """Record one phase change of a WorkOrder, after its status was written.

        Call it once per successful status write whose phase changed; calling it with
        old == new does nothing, so it is also safe to call on every write.

        - `created_at`: when this attempt became claimable: the WorkOrder's
          creationTimestamp for the first attempt, the old status's `nextRetryAfter` for
          a retry. Used when entering CLAIMED (queue wait = claimed_at - created_at).
        - `claimed_at`: when the attempt was claimed: the new status's `claimedAt` when
          entering CLAIMED, the old status's `claimedAt` when leaving it (the new status
          clears it). Used when leaving CLAIMED (attempt duration = now - claimed_at).
        - `reason`: the new status's `lastErrorReason` when entering RETRY_PENDING
          (retries by reason; `ClaimTimedOut` also counts a stale claim) or FAILED.
        """
        if old_phase == new_phase or new_phase is None:
            return
        if new_phase == Phase.CLAIMED:
            wait = _seconds(created_at, claimed_at or now)
            if wait is not None:
                self.queue_wait.labels(work_type).observe(wait)
        if old_phase == Phase.CLAIMED and new_phase in _ATTEMPT_OUTCOMES:
            self.record_attempt(work_type, _ATTEMPT_OUTCOMES[new_phase], claimed_at, now)
        if new_phase in (Phase.RETRY_PENDING, Phase.FAILED) and reason == STALE_CLAIM_REASON:
            self.record_stale_claim(work_type)
        if new_phase == Phase.RETRY_PENDING:
            self.record_retry(work_type, reason)

    def record_attempt(
        self, work_type: str, outcome: str, claimed_at: datetime | None, ended_at: datetime
    ) -> None:
        """An attempt ended (`outcome`: succeeded or failed); no-op without `claimed_at`."""
        duration = _seconds(claimed_at, ended_at)
        if duration is not None:
            self.attempt_duration.labels(work_type, outcome).observe(duration)

    def record_retry(self, work_type: str, reason: str | None) -> None:
        self.retries.labels(work_type, self._reason(reason)).inc()

    def record_stale_claim(self, work_type: str) -> None:
        self.stale_claims.labels(work_type).inc()

    # --- Waitpoints and Signals -----------------------------------------------------

    def record_waitpoint_closed(
        self, close_reason: str, activated_at: datetime | None, closed_at: datetime
    ) -> None:
        """A waitpoint closed (Satisfied, Expired, Cancelled); no-op if never activated."""
        wait = _seconds(activated_at, closed_at)
        if wait is not None:
            self.waitpoint_wait.labels(close_reason).observe(wait)

    def record_signal(self, accepted: bool, reason: str) -> None:
        """A signal was accepted, or refused with `reason` (e.g. BadProof, Replayed)."""
        result = "accepted" if accepted else "refused"
        self.signals.labels(result, self._signal_reason(reason)).inc()

    # --- reconciles -----------------------------------------------------------------

    def record_reconcile(self, kind: str, seconds: float, *, error: bool = False) -> None:
        """One reconcile of a `kind` (workorder, waitpoint, signal) took `seconds`."""
        self.reconcile_duration.labels(kind).observe(max(0.0, seconds))
        if error:
            self.reconcile_errors.labels(kind).inc()

    @contextmanager
    def time_reconcile(self, kind: str) -> Iterator[None]:
        """Time the enclosed reconcile; an exception counts as an error and propagates."""
        start = time.monotonic()
        try:
            yield
        except Exception:
            self.record_reconcile(kind, time.monotonic() - start, error=True)
            raise
        # BaseException (cancellation at shutdown) is not a reconcile's failure: not counted.
        self.record_reconcile(kind, time.monotonic() - start)


async def serve_metrics(
    port: int, registry: CollectorRegistry, *, host: str = "0.0.0.0"
) -> web.AppRunner:
    """Serve `registry` at http://host:port/metrics until `await runner.cleanup()`.

    `port=0` binds a free port: read it back with `bound_port(runner)`.
    """
    app = web.Application()
    app.router.add_get("/metrics", make_aiohttp_handler(registry))
    runner = web.AppRunner(app, access_log=None)  # scrapes every few seconds: no log lines
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The TCP port a runner from `serve_metrics` listens on."""
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("the metrics server is not listening on TCP")
