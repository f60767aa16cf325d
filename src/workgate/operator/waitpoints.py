"""Reconcile one Waitpoint: mint its token, take in its Signals, close it.

The WorkOrder reconciler activates and cancels waitpoints (it knows when the WorkOrder
reaches a gate); this one owns everything a signal changes. Both write status with a
resourceVersion precondition, so neither overwrites the other.
"""

from __future__ import annotations

import binascii
import logging
from collections import defaultdict
from datetime import datetime

from pydantic import ValidationError

from workgate.api.common import format_time, now_utc, parse_time
from workgate.api.waitpoint import (
    CloseReason,
    ReceivedSignal,
    SignalPhase,
    SignalSpec,
    WaitpointSpec,
    WaitpointStage,
    WaitpointState,
    WaitpointStatus,
)
from workgate.core import signals as rules
from workgate.core.lifecycle import WaitpointView
from workgate.core.naming import token_secret_name
from workgate.k8s import waitpoints as io
from workgate.k8s.api import SIGNALS, WAITPOINTS, Body, KubeApi
from workgate.k8s.events import post_event
from workgate.k8s.owners import controlled_by
from workgate.operator.cache import ObjectCache
from workgate.operator.config import OperatorConfig
from workgate.operator.metrics import OperatorMetrics
from workgate.operator.queue import WorkQueue

log = logging.getLogger(__name__)
Key = tuple[str, str]


def sender_of(signal: Body) -> str | None:
    return (signal["metadata"].get("annotations") or {}).get(io.ANNOTATION_SENDER)


class WaitpointReconciler:
    def __init__(
        self,
        api: KubeApi,
        config: OperatorConfig,
        operator_key: bytes,
        metrics: OperatorMetrics | None = None,
    ) -> None:
        self.api = api
        self.metrics = metrics or OperatorMetrics()
        self.config = config
        self.operator_key = operator_key
        self.waitpoints: ObjectCache[Key] = ObjectCache()
        self.signals: ObjectCache[Key] = ObjectCache()
        self.signals_by_waitpoint: dict[Key, set[str]] = defaultdict(set)
        self.by_workorder: dict[Key, set[str]] = defaultdict(set)  # (ns, WorkOrder) -> names
        self.queue: WorkQueue[Key] = WorkQueue(self.reconcile, workers=config.workers)

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

    def token_for(self, body: Body) -> str:
        meta = body["metadata"]
        algorithm = (body.get("status") or {}).get("tokenAlgorithm") or self.config.token_algorithm
        return rules.mint_token(
            self.operator_key, meta["namespace"], meta["name"], meta["uid"], algorithm
        )

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
        status = before.model_copy(deep=True)
        now = now_utc()
        events: list[tuple[str, str, str]] = []
        if status.state is None:
            secret_name = token_secret_name(name)
            await io.ensure_token_secret(self.api, body, secret_name, self.token_for(body))
            annotations = body["metadata"].get("annotations") or {}
            recipient = annotations.get(io.ANNOTATION_RECIPIENT_KEY)
            if spec.stage == WaitpointStage.DYNAMIC and recipient:
                try:
                    status.sealed_token = rules.seal_token(
                        self.token_for(body), recipient, body["metadata"]["uid"]
                    )
                except (ValueError, binascii.Error):
                    message = "the token-recipient-key annotation is not an X25519 public key"
                    events.append(("Warning", "InvalidRecipientKey", message))
            status.state = WaitpointState.PENDING
            status.created_at = parse_time(body["metadata"].get("creationTimestamp")) or now
            status.token_secret_name = secret_name
            status.token_algorithm = self.config.token_algorithm
        verdicts = self.take_signals(body, spec, status, now)
        if status.state == WaitpointState.ACTIVE:
            received = [s.name for s in status.received_signals]
            expires = status.expires_at
            if rules.is_satisfied(spec.required_signal_names, received):
                self.close(status, CloseReason.SATISFIED, now)
                events.append(
                    ("Normal", "Satisfied", f"closed: received {', '.join(sorted(set(received)))}")
                )
            elif expires is not None and now >= expires:
                self.close(status, CloseReason.EXPIRED, now)
                events.append(
                    ("Warning", "Expired", f"expired at {format_time(expires)} ({spec.on_timeout})")
                )
            elif expires is not None:
                self.queue.add_at(key, expires)
        status.received_count = len(status.received_signals)
        status.observed_generation = body["metadata"].get("generation")
        if status != before:
            written = await io.patch_status(
                self.api,
                WAITPOINTS.path(namespace, name),
                body["metadata"]["resourceVersion"],
                status.to_wire(),
            )
            if written is None:
                self.queue.add_after(key, 0.2)
                return
            self.observe_waitpoint(written)
            body = written
            if status.close_reason and status.close_reason != before.close_reason:
                self.metrics.record_waitpoint_closed(status.close_reason, status.activated_at, now)
        for signal_name, phase, reason, message in verdicts:
            await self.mark_signal(namespace, signal_name, phase, reason, message)
            self.metrics.record_signal(phase == SignalPhase.ACCEPTED, reason)
            kind = "Normal" if phase == SignalPhase.ACCEPTED else "Warning"
            events.append((kind, f"Signal{phase}", f"signal {signal_name}: {message}"))
        for type_, reason, message in events:
            await post_event(self.api, body, type_, reason, message, instance=self.config.identity)

    def take_signals(
        self, waitpoint: Body, spec: WaitpointSpec, status: WaitpointStatus, now: datetime
    ) -> list[tuple[str, SignalPhase, str, str]]:
        """Judge the waitpoint's unjudged Signals; accepted ones are recorded in `status`."""
        namespace, name = waitpoint["metadata"]["namespace"], waitpoint["metadata"]["name"]
        verdicts: list[tuple[str, SignalPhase, str, str]] = []
        token = self.token_for(waitpoint)
        for signal_name in sorted(self.signals_by_waitpoint.get((namespace, name), ())):
            signal = self.signals.get((namespace, signal_name))
            if signal is None or (signal.get("status") or {}).get("phase"):
                continue
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
            sender = sender_of(signal) or ""
            refusal = rules.judge_signal(
                rules.SignalCheck(
                    namespace=namespace,
                    waitpoint=name,
                    waitpoint_state=status.state,
                    required_signal_names=spec.required_signal_names,
                    used_nonces=[r.nonce for r in status.received_signals],
                    token=token,
                    signal_name=sig.signal_name,
                    nonce=sig.nonce,
                    payload=sig.payload,
                    proof=sig.proof,
                    sender=sender,
                    claimed_sender=None,
                )
            )
            if refusal is not None:
                verdicts.append((signal_name, SignalPhase.REJECTED, refusal[0], refusal[1]))
                continue
            status.received_signals.append(
                ReceivedSignal(
                    name=sig.signal_name,
                    signal=signal_name,
                    sender=sender,
                    received_at=now,
                    payload_digest=rules.payload_digest(sig.payload),
                    nonce=sig.nonce,
                )
            )
            buffered = (
                " (buffered until activation)" if status.state == WaitpointState.PENDING else ""
            )
            verdicts.append(
                (
                    signal_name,
                    SignalPhase.ACCEPTED,
                    "Accepted",
                    f"{sig.signal_name} accepted{buffered}",
                )
            )
        return verdicts

    @staticmethod
    def close(status: WaitpointStatus, reason: CloseReason, now: datetime) -> None:
        status.state = WaitpointState.CLOSED
        status.close_reason = reason
        status.closed_at = now

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
