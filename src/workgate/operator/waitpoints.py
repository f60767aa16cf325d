"""Reconcile one Waitpoint: mint its token, take in its Signals, close it.

The WorkOrder reconciler activates and cancels waitpoints (it knows when the WorkOrder
reaches a gate); this one owns everything a signal changes. Both write status with a
resourceVersion precondition, so neither overwrites the other.

A new waitpoint is initialised in two writes: first the id of the key its token is minted
with and the WorkOrder's author (so a crash, or a key rotation, between the two can never
leave a token Secret that disagrees with the key id on record), then, with its token
Secret in place, the state `pending`.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime

from pydantic import ValidationError

from workgate.api.common import ConditionStatus, now_utc, parse_time
from workgate.api.waitpoint import (
    ReceivedSignal,
    Rejection,
    SignalPhase,
    SignalSpec,
    WaitpointSpec,
    WaitpointStage,
    WaitpointState,
    WaitpointStatus,
)
from workgate.core import approvals
from workgate.core import signals as rules
from workgate.core.conditions import get_condition, set_condition
from workgate.core.lifecycle import WaitpointView
from workgate.core.naming import token_secret_name
from workgate.core.waitpoints import settle
from workgate.k8s import authz
from workgate.k8s import waitpoints as io
from workgate.k8s.api import SIGNALS, WAITPOINTS, WORKORDERS, ApiError, Body, KubeApi
from workgate.k8s.events import EventSink
from workgate.k8s.owners import controlled_by
from workgate.k8s.tokenkeys import TokenKeys
from workgate.operator.cache import ObjectCache
from workgate.operator.config import OperatorConfig
from workgate.operator.judging import (
    Candidate,
    Judged,
    Permits,
    arrival,
    judge,
    sender_of,
    summarize,
)
from workgate.operator.metrics import OperatorMetrics
from workgate.operator.queue import WorkQueue

log = logging.getLogger(__name__)
Key = tuple[str, str]
POLICY_CHECK_SECONDS = 10.0
NAME_TAKEN = "NameTaken"
NAME_TAKEN_RECHECK_SECONDS = 10.0  # a squatted token Secret name is looked at again
MARK_CONCURRENCY = 16  # Signal status writes in flight at once, per reconcile


class WaitpointReconciler:
    def __init__(
        self,
        api: KubeApi,
        config: OperatorConfig,
        keys: TokenKeys,
        metrics: OperatorMetrics | None = None,
        events: EventSink | None = None,
    ) -> None:
        self.api = api
        self.metrics = metrics or OperatorMetrics()
        self.config = config
        self.keys = keys
        # Events go out in the background (k8s/events.py); `events.run()` sends them.
        self.events = events or EventSink(api, instance=config.identity)
        self.permits = Permits()  # RBAC verdicts of the Signals this process admitted
        self.waitpoints: ObjectCache[Key] = ObjectCache()
        self.signals: ObjectCache[Key] = ObjectCache()
        self.signals_by_waitpoint: dict[Key, set[str]] = defaultdict(set)
        self.by_workorder: dict[Key, set[str]] = defaultdict(set)  # (ns, WorkOrder) -> names
        self.queue: WorkQueue[Key] = WorkQueue(self.reconcile, workers=config.waitpoint_workers)
        # Told the owning WorkOrder's key after each status write (operator/informers.py
        # wires it to the WorkOrder queue), so a closed gate is acted on without waiting
        # for the watch to bring the write back.
        self.owner_changed: Callable[[Key], None] = lambda _: None
        self._policy_bound_at: datetime | None = None
        self._policy_checked = -math.inf

    def views_for(self, namespace: str, workorder: str, uid: str) -> dict[str, WaitpointView]:
        """The waitpoints this very WorkOrder controls, by key, for the lifecycle decision
        (a namesake's, awaiting garbage collection, or a squatter's are not its own)."""
        views = {}
        for name in self.by_workorder.get((namespace, workorder), ()):
            body = self.waitpoints.get((namespace, name))
            if body is not None and controlled_by(body, uid):
                view = io.waitpoint_view(body)
                views[view.key] = view
        return views

    def observe_waitpoint(self, body: Body, deleted: bool = False) -> Key:
        """Record a Waitpoint (from a watch event or our own write); returns its owner's key."""
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        owner = (namespace, str(body["spec"]["workOrderName"]))
        if deleted:
            self.waitpoints.deleted((namespace, name), body)
            self.by_workorder[owner].discard(name)
        else:
            self.waitpoints.observe((namespace, name), body)
            self.by_workorder[owner].add(name)
        return owner

    def observe_signal(self, body: Body, deleted: bool = False) -> Key:
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        target = (namespace, str((body.get("spec") or {}).get("waitpointName", "")))
        if deleted:
            self.signals.deleted((namespace, name), body)
            self.signals_by_waitpoint[target].discard(name)
        else:
            self.signals.observe((namespace, name), body)
            self.signals_by_waitpoint[target].add(name)
        return target

    # --- whose word counts ------------------------------------------------------------

    async def trusted(self, created: datetime | None) -> bool:
        """May identities recorded at admission on an object created then be believed?"""
        # Checked again at most once a second while not in force, every 10 s while it is.
        age = time.monotonic() - self._policy_checked
        if not self.config.webhook and age > (
            POLICY_CHECK_SECONDS if self._policy_bound_at is not None else 1.0
        ):
            self._policy_bound_at = await authz.policy_bound_at(
                self.api, self.config.identity_policy_binding, self.config.identity_policy
            )
            self._policy_checked = time.monotonic()
        return approvals.identity_trusted(
            webhook=self.config.webhook, created=created, policy_bound_at=self._policy_bound_at
        )

    async def author_of(self, waitpoint: Body) -> str | None:
        """Who created the waitpoint's WorkOrder, if admission recorded it believably."""
        meta = waitpoint["metadata"]
        try:
            wo = await self.api.get(
                WORKORDERS.path(meta["namespace"], str(waitpoint["spec"]["workOrderName"]))
            )
        except ApiError as exc:
            if exc.not_found:
                return None
            raise
        owners = {r.get("uid") for r in meta.get("ownerReferences") or []}
        if wo["metadata"]["uid"] not in owners:
            return None  # not our WorkOrder's waitpoint: whoever made it has no author
        author = (wo["metadata"].get("annotations") or {}).get(io.ANNOTATION_CREATED_BY)
        created = parse_time(wo["metadata"].get("creationTimestamp"))
        return author if author and await self.trusted(created) else None

    # --- reconcile -------------------------------------------------------------------

    async def reconcile(self, key: Key) -> None:
        with self.metrics.time_reconcile("waitpoint"):
            await self._reconcile(key)

    async def _reconcile(self, key: Key) -> None:
        body = self.waitpoints.get(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        namespace, name = key
        try:
            spec = WaitpointSpec.model_validate(body["spec"])
            before = WaitpointStatus.model_validate(body.get("status") or {})
        except ValidationError as exc:
            log.error("Waitpoint %s/%s is unreadable: %s", namespace, name, exc)
            return
        now = now_utc()
        status = before.model_copy(deep=True)
        events: list[tuple[str, str, str]] = []
        verdicts: list[Judged] = []
        if status.state is None and status.token_key_id is None:
            status.token_key_id, _ = await self.keys.current()
            status.token_algorithm = self.config.token_algorithm
            status.author = await self.author_of(body)
            status.created_at = parse_time(body["metadata"].get("creationTimestamp")) or now
        elif status.state is None:
            events += await self.mint(body, spec, status)
        else:
            verdicts = await self.take_signals(body, status, now)
            settled = settle(spec, status, now, body["metadata"].get("generation"))
            status, events = settled.status, events + settled.events
            if settled.wake_at is not None:
                self.queue.add_at(key, settled.wake_at)
        if status != before:
            wire, old = status.to_wire(), body.get("status") or {}
            written = await io.patch_status(
                self.api,
                WAITPOINTS.path(namespace, name),
                body["metadata"]["resourceVersion"],
                {k: wire.get(k) for k in old.keys() | wire.keys()},  # null clears a field
            )
            if written is None:
                await self.refetch(key)  # moved on meanwhile: judge again with what it is now
                return
            self.owner_changed(self.observe_waitpoint(written))
            body = written
            if before.state is None:
                self.queue.add(key)  # the next step of initialisation, or buffered signals
            if status.close_reason and status.close_reason != before.close_reason:
                self.metrics.record_waitpoint_closed(status.close_reason, status.activated_at, now)
        # The Events and verdicts after the status that decided them (the WorkOrder
        # already knows): Events are queued, a round's Signals marked a few at a time.
        for type_, reason, message in events + summarize(verdicts):
            self.events.post(body, type_, reason, message)
        marking = asyncio.Semaphore(MARK_CONCURRENCY)

        async def mark(verdict: Judged) -> None:
            async with marking:
                await self.mark_signal(namespace, *verdict)
            self.metrics.record_signal(verdict[1] == SignalPhase.ACCEPTED, verdict[2])

        await asyncio.gather(*(mark(v) for v in verdicts))

    async def refetch(self, key: Key) -> None:
        """After a lost race: read the waitpoint (the watch may take a while to say what
        changed) and look again at once."""
        try:
            fresh = await self.api.get(WAITPOINTS.path(*key))
        except ApiError as exc:
            if not exc.not_found:
                raise
            return  # deleted: its DELETED event removes it from the cache
        self.observe_waitpoint(fresh)
        self.queue.add(key)

    async def mint(
        self, body: Body, spec: WaitpointSpec, status: WaitpointStatus
    ) -> list[tuple[str, str, str]]:
        """Create the token Secret (for the key id already on record) and go pending."""
        meta = body["metadata"]
        key_id = status.token_key_id or ""
        token = await self.keys.token(meta, key_id, status.token_algorithm or "sha256")
        if token is None:
            message = f"the operator key {key_id!r} on record is gone; recreate the waitpoint"
            return [("Warning", "TokenKeyMissing", message)]
        secret_name = token_secret_name(meta["name"])
        taken = await io.ensure_token_secret(self.api, body, secret_name, token, key_id)
        if taken is not None:  # reported on Ready, looked at again later: never adopted
            return self.name_taken(body, status, taken.message)
        recipient = (meta.get("annotations") or {}).get(io.ANNOTATION_RECIPIENT_KEY)
        events = []
        if spec.stage == WaitpointStage.DYNAMIC and recipient:
            try:
                status.sealed_token = rules.seal_token(token, recipient, meta["uid"])
            except (ValueError, binascii.Error):
                message = "the token-recipient-key annotation is not an X25519 public key"
                events.append(("Warning", "InvalidRecipientKey", message))
        status.state = WaitpointState.PENDING
        status.token_secret_name = secret_name
        return events

    def name_taken(
        self, body: Body, status: WaitpointStatus, message: str
    ) -> list[tuple[str, str, str]]:
        """The token Secret's name is held by an object this waitpoint does not control:
        Ready=False NameTaken (an Event the first time), and another look in a while."""
        meta = body["metadata"]
        ready = get_condition(status.conditions, "Ready")
        first = ready is None or ready.reason != NAME_TAKEN or ready.message != message
        status.conditions = set_condition(
            status.conditions,
            "Ready",
            ConditionStatus.FALSE,
            NAME_TAKEN,
            message,
            generation=meta.get("generation"),
            now=now_utc(),
        )
        self.queue.add_after((meta["namespace"], meta["name"]), NAME_TAKEN_RECHECK_SECONDS)
        return [("Warning", NAME_TAKEN, message)] if first else []

    async def take_signals(
        self, waitpoint: Body, status: WaitpointStatus, now: datetime
    ) -> list[Judged]:
        """Judge the waitpoint's unjudged Signals in order of arrival; accepted ones are
        recorded in `status` (so later ones in the same round see them)."""
        namespace, name = waitpoint["metadata"]["namespace"], waitpoint["metadata"]["name"]
        verdicts: list[Judged] = []
        pending = []
        for signal_name in self.signals_by_waitpoint.get((namespace, name), ()):
            signal = self.signals.get((namespace, signal_name))
            if signal is not None and not (signal.get("status") or {}).get("phase"):
                pending.append(signal)
        for signal in sorted(pending, key=arrival):
            signal_name = signal["metadata"]["name"]
            try:
                sig = SignalSpec.model_validate(signal["spec"])
            except ValidationError:
                verdicts.append(
                    (signal_name, SignalPhase.REJECTED, "Invalid", "unreadable signal spec")
                )
                continue
            # Accepted before a crash, but not yet marked: finish marking it.
            if any(
                r.signal == signal_name and r.nonce == sig.nonce for r in status.received_signals
            ):
                verdicts.append((signal_name, SignalPhase.ACCEPTED, "Accepted", "accepted"))
                continue
            created = parse_time(signal["metadata"].get("creationTimestamp"))
            sender = sender_of(signal)
            refusal = await judge(
                self.api,
                self.keys,
                waitpoint,
                status,
                Candidate(
                    spec=sig,
                    sender=sender,
                    verified=await self.trusted(created),
                    signal_uid=str(signal["metadata"].get("uid") or "") or None,
                ),
                default_algorithm=self.config.token_algorithm,
                permits=self.permits,
            )
            if refusal is not None:
                verdicts.append((signal_name, SignalPhase.REJECTED, refusal[0], refusal[1]))
                continue
            status.received_signals.append(
                ReceivedSignal(
                    name=sig.signal_name,
                    signal=signal_name,
                    sender=sender.user,
                    received_at=now,
                    payload_digest=rules.payload_digest(sig.payload),
                    nonce=sig.nonce,
                )
            )
            spec = WaitpointSpec.model_validate(waitpoint["spec"])
            if sig.signal_name == spec.reject_signal_name:
                status.rejection = Rejection(
                    waitpoint=name, signal=signal_name, by=sender.user, at=now, payload=sig.payload
                )
            buffered = (
                " (buffered until activation)" if status.state == WaitpointState.PENDING else ""
            )
            verdicts.append(
                (
                    signal_name,
                    SignalPhase.ACCEPTED,
                    "Accepted",
                    f"{sig.signal_name} from {sender.user} accepted{buffered}",
                )
            )
        return verdicts

    async def mark_signal(
        self, namespace: str, name: str, phase: SignalPhase, reason: str, message: str
    ) -> None:
        signal = self.signals.get((namespace, name))
        if signal is None:
            return
        written = await io.patch_status(
            self.api,
            SIGNALS.path(namespace, name),
            signal["metadata"]["resourceVersion"],
            {
                "phase": phase,
                "reason": reason,
                "message": message,
                "observedGeneration": signal["metadata"].get("generation"),
            },
        )
        if written is not None:
            self.signals.observe((namespace, name), written)
