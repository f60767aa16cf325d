"""Reconcile one WorkOrder: observe, decide with the core, act, write status once."""

from __future__ import annotations

import contextlib
import logging
import random
from collections import OrderedDict
from collections.abc import Iterator

from pydantic import ValidationError

from workgate.api.common import now_utc, parse_time
from workgate.api.wire import current_attempt, recorded_phase, rerun_request
from workgate.api.workorder import Phase, WorkOrderSpec, WorkOrderStatus
from workgate.core import lifecycle
from workgate.core.claims import LeaseView
from workgate.core.decisions import ENDS_A_CLAIM
from workgate.core.naming import build_run_name
from workgate.k8s import owners, shipwright
from workgate.k8s.api import (
    WORKORDERS,
    ApiError,
    Body,
    KubeApi,
)
from workgate.k8s.events import EventSink
from workgate.operator import lanes, records
from workgate.operator.actions import ActionFailed, Actions, NameTakenError
from workgate.operator.cache import ObjectCache
from workgate.operator.config import OperatorConfig
from workgate.operator.leader import LeaderElector
from workgate.operator.metrics import OperatorMetrics
from workgate.operator.queue import WorkQueue
from workgate.operator.queues import ACTIVE, WorkTypeQueues
from workgate.operator.waitpoints import WaitpointReconciler

log = logging.getLogger(__name__)
Key = tuple[str, str]
TERMINAL = frozenset(p.value for p in (Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED))
SPEC_CACHE_ENTRIES = 4096
LOW_RATE = 100  # finished WorkOrders looked at per second, at most (a restart's backlog)


class WorkOrderReconciler:
    def __init__(
        self,
        api: KubeApi,
        config: OperatorConfig,
        gates: WaitpointReconciler,
        metrics: OperatorMetrics | None = None,
        events: EventSink | None = None,
    ) -> None:
        self.api = api
        self.gates = gates
        self.events = events or gates.events  # queued, sent in the background
        self.metrics = metrics or OperatorMetrics()
        self.config = config
        self.policy = config.policy
        self.workorders: ObjectCache[Key] = ObjectCache(records.workorder_record)
        self.leases: ObjectCache[Key] = ObjectCache(records.lease_record)  # by WorkOrder
        self.build_runs: ObjectCache[Key] = ObjectCache(records.build_run_record)  # by name
        self.actions = Actions(api, config, gates, self.leases, self.build_runs)
        self.queue: WorkQueue[Key] = WorkQueue(
            self.reconcile, workers=config.workers, low_held=True, low_rate=LOW_RATE
        )
        self.queues = WorkTypeQueues(config.policy.concurrency_limits)
        self.leader: LeaderElector | None = None  # set when limits need one admitter
        self.writes = 0
        # Validated specs by (uid, generation): a spec changes only with its generation.
        self._specs: OrderedDict[tuple[str, int], WorkOrderSpec] = OrderedDict()

    def spec_of(self, body: Body) -> WorkOrderSpec:
        meta = body["metadata"]
        key = (str(meta.get("uid") or ""), int(meta.get("generation") or 0))
        spec = self._specs.get(key)
        if spec is not None:
            self._specs.move_to_end(key)
            return spec
        spec = WorkOrderSpec.model_validate(body.get("spec") or {})
        if key[0]:
            self._specs[key] = spec
            if len(self._specs) > SPEC_CACHE_ENTRIES:
                self._specs.popitem(last=False)
        return spec

    def observe_workorder(self, key: Key, body: Body, *, deleted: bool = False) -> None:
        """A WorkOrder as the watch (or our own write) shows it."""
        work_type = str((body.get("spec") or {}).get("workType", ""))
        if deleted:
            self.workorders.deleted(key, body)
            self.queues.forget(key, work_type)
            self.slots_changed(work_type)
            return
        self.workorders.observe(key, body)
        self.queues.observe(key, body)
        self.queue.add(key, low=lanes.settled(body))

    def slots_changed(self, work_type: str) -> None:
        if self.queues.limited(work_type):
            for waiting in self.queues.next_up(work_type):
                self.queue.add(waiting)

    def workorder_rows(self) -> Iterator[tuple[str, str, str, str]]:
        """(namespace, name, work type, phase) of every cached WorkOrder, for the gauge."""
        for body in self.workorders.values():
            meta = body["metadata"]
            yield (
                meta["namespace"],
                meta["name"],
                str((body.get("spec") or {}).get("workType", "")),
                str((body.get("status") or {}).get("phase") or "PENDING"),
            )

    async def reconcile(self, key: Key) -> None:
        with self.metrics.time_reconcile("workorder"):
            await self._reconcile(key)

    async def _reconcile(self, key: Key) -> None:
        body = self.workorders.get(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return  # deleted: the garbage collector removes the Lease and BuildRuns
        # A WorkOrder that may take a limited work type's slot decides under that type's
        # lock: two workers never give one free slot away twice.
        phase = recorded_phase(body.get("status"))
        lock = None
        if phase not in ACTIVE and phase not in TERMINAL:
            lock = self.queues.admitting(str((body.get("spec") or {}).get("workType", "")))
        if lock is not None and not self.leading():
            return  # a limited work type's waiting WorkOrders are the admitting leader's
        async with lock or contextlib.nullcontext():
            await self._reconcile_body(key, body)

    def leading(self) -> bool:
        """May this replica admit queued work? (operator/leader.py; one replica: always.)"""
        return self.leader is None or self.leader.leading()

    def took_the_lead(self) -> None:
        """Now admitting: look at every waiting WorkOrder of a limited work type."""
        for body in self.workorders.values():
            key = (body["metadata"]["namespace"], body["metadata"]["name"])
            spec, status = body.get("spec") or {}, body.get("status") or {}
            phase = recorded_phase(status)
            limited = self.queues.limited(str(spec.get("workType", "")))
            if limited and phase not in ACTIVE and phase not in TERMINAL:
                self.queue.add(key)

    async def _reconcile_body(self, key: Key, body: Body) -> None:
        body = self.workorders.get(key) or body  # as it is now, after waiting for the lock
        namespace, name = key
        try:
            spec = self.spec_of(body)
            status = WorkOrderStatus.recorded(body.get("status"))
        except ValidationError as exc:
            log.error("WorkOrder %s/%s is unreadable: %s", namespace, name, exc)
            return
        observation = self.observe(key, spec, status, body)
        decision = lifecycle.decide(observation, self.policy)
        # Claims are released (or revoked) only after the status records the attempt's
        # end (an agent that claims the moment the Lease is gone must then see that its
        # attempt is over), or, with no status to write, on a view confirmed current.
        release = [a for a in decision.actions if isinstance(a, ENDS_A_CLAIM)]
        first = [a for a in decision.actions if a not in release]
        try:
            done = await self.actions.execute(body, first)
        except (ActionFailed, NameTakenError) as failure:
            if isinstance(failure, ActionFailed):
                error = (failure.reason, failure.message, failure.retryable)
                observation = self.observe(key, spec, status, body, action_error=error)
            else:
                observation = self.observe(key, spec, status, body, name_taken=str(failure))
            decision = lifecycle.decide(observation, self.policy)
            release = [a for a in decision.actions if isinstance(a, ENDS_A_CLAIM)]
            first = [a for a in decision.actions if a not in release]
            done = await self.actions.execute(body, first)
        if not done:
            self.queue.add_after(key, 0.2)
            return
        written = None
        if decision.status != status and decision.status_may_wait_until is None:
            written = await self.write_status(body, decision.status)
            if written is None:
                self.queue.add_after(key, 0.2)
                return
            self.record(body, status, decision.status, observation.lease)
            body = written
            if status.phase in ACTIVE and decision.status.phase not in ACTIVE:
                self.slots_changed(spec.work_type)
        if release and written is None and not await self.view_is_current(key, body):
            self.queue.add_after(key, 0)  # decide again on the WorkOrder as it is
            return
        if not await self.actions.execute(body, list(release)):
            self.queue.add_after(key, 0.2)
        for event in decision.events:
            self.events.post(body, event.type, event.reason, event.message)
        if decision.requeue_at is not None:
            self.queue.add_at(key, decision.requeue_at)

    async def view_is_current(self, key: Key, body: Body) -> bool:
        """Is the cached WorkOrder this decision saw the stored one? Asked before a claim
        is ended without a status write (whose resourceVersion precondition would catch
        a stale view): a replica whose WorkOrder watch trails its Lease watch (a re-list
        after an API server restart) sees a new attempt's claim beside an old attempt's
        status, and must not end it. A newer WorkOrder goes into the cache."""
        try:
            stored = await self.api.get(WORKORDERS.path(*key))
        except ApiError as exc:
            if exc.not_found:
                return False  # gone: its claims go with it (garbage collection)
            raise
        if stored["metadata"].get("resourceVersion") == body["metadata"].get("resourceVersion"):
            return True
        self.workorders.observe(key, stored)
        return False

    def observe(
        self,
        key: Key,
        spec: WorkOrderSpec,
        status: WorkOrderStatus,
        body: Body,
        action_error: tuple[str, str, bool] | None = None,
        name_taken: str | None = None,
    ) -> lifecycle.Observation:
        namespace, name = key
        uid = str(body["metadata"].get("uid", ""))
        # Only children this very WorkOrder controls: a namesake's (deleted, not yet
        # collected) or a squatter's object at the same name is not ours to read.
        lease_body = self.leases.get(key)
        if lease_body is not None and not owners.controlled_by(lease_body, uid):
            lease_body = None
        run_name = build_run_name(name, current_attempt(status.retry_count))
        run_body = self.build_runs.get((namespace, run_name))
        if run_body is not None and not owners.controlled_by(run_body, uid):
            run_body = None
        return lifecycle.Observation(
            now=now_utc(),
            name=name,
            namespace=namespace,
            generation=int(body["metadata"].get("generation") or 0),
            spec=spec,
            status=status,
            lease=LeaseView.from_body(lease_body) if lease_body else None,
            build_run=shipwright.build_run_view(run_body) if run_body else None,
            waitpoints=self.gates.views_for(namespace, name, uid),
            uid=uid,
            rerun=rerun_request(body["metadata"]),
            queue=self.queues.view(key, body),
            random_value=random.random(),
            action_error=action_error,
            name_taken=name_taken,
            created=parse_time(body["metadata"].get("creationTimestamp")),
        )

    def record(
        self, body: Body, old: WorkOrderStatus, new: WorkOrderStatus, lease: LeaseView | None
    ) -> None:
        if (  # claimed and ended between two status writes (a held first status)
            old.phase in (None, Phase.PENDING)
            and new.phase not in (None, Phase.PENDING, Phase.CLAIMED)
            and lease is not None
            and lease.attempt == new.attempt
            and lease.acquire_time is not None
        ):
            claimed = new.model_copy(
                update={"phase": Phase.CLAIMED, "claimed_at": lease.acquire_time}
            )
            self.record(body, old, claimed, None)
            old = claimed
        entering_claim = new.phase == Phase.CLAIMED and old.phase != Phase.CLAIMED
        claimable_since = (
            old.next_retry_after
            if old.retry_count
            else parse_time(body["metadata"].get("creationTimestamp"))
        )
        self.metrics.record_transition(
            str(body["spec"].get("workType", "")),
            old.phase,
            new.phase,
            claimable_since,
            new.claimed_at if entering_claim else old.claimed_at,
            now_utc(),
            reason=new.last_error_reason,
        )

    async def write_status(self, workorder: Body, status: WorkOrderStatus) -> Body | None:
        meta = workorder["metadata"]
        old = workorder.get("status") or {}
        new = status.to_wire()
        patch = {k: new.get(k) for k in old.keys() | new.keys()}  # null removes a cleared field
        try:
            written = await self.api.merge_patch(
                WORKORDERS.path(meta["namespace"], meta["name"], "status"),
                {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": patch},
            )
        except ApiError as exc:
            if exc.conflict or exc.not_found:
                return None
            raise
        key = (meta["namespace"], meta["name"])
        self.workorders.observe(key, written)
        self.queues.observe(key, written)
        return written
