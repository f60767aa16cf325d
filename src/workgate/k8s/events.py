"""Kubernetes Events about workgate objects (what `kubectl describe` shows).

Events are best effort in Kubernetes (client-go's recorder queues them, drops what does not
fit and never fails its caller), and so they are here: a reconcile hands its Events to an
`EventSink` and goes on, and a few background senders create them. A reconcile worker
therefore waits for its status write only, not for the Events that describe it. The
queue is bounded: when the API server is too slow to take Events as fast as they come,
the newest are dropped and counted (`EventSink.dropped`) rather than held without limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time

from workgate.api.common import format_time, now_utc
from workgate.k8s.api import EVENTS, ApiError, Body, KubeApi

log = logging.getLogger(__name__)
COMPONENT = "workgate-operator"
QUEUE_CAPACITY = 4096  # Events waiting to be sent, at most
SENDERS = 8  # Event creates in flight at once
DROP_LOG_SECONDS = 10.0  # at most one warning about dropped Events this often


def build_event(involved: Body, type_: str, reason: str, message: str, *, instance: str) -> Body:
    meta = involved["metadata"]
    stamp = format_time(now_utc().replace(microsecond=0))
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta['name'][:200]}.{secrets.token_hex(8)}",
            "namespace": meta["namespace"],
        },
        "involvedObject": {
            "apiVersion": involved.get("apiVersion"),
            "kind": involved.get("kind"),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance[:128],
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


async def post_event(
    api: KubeApi, involved: Body, type_: str, reason: str, message: str, *, instance: str
) -> None:
    """Create one Event now. Best effort: one that cannot be written fails nothing."""
    await _create(api, build_event(involved, type_, reason, message, instance=instance))


async def _create(api: KubeApi, event: Body) -> bool:
    try:
        await api.create(EVENTS.path(event["metadata"]["namespace"]), event)
    except ApiError as exc:
        name, reason = event["involvedObject"]["name"], event["reason"]
        log.warning("could not post event %s for %s: %s", reason, name, exc)
        return False
    return True


class EventSink:
    """Events queued by reconcilers and created in the background by `run()`'s senders.

    `post` never waits: the Event is built at once (its timestamp and the involved object's
    resourceVersion are those of the transition it reports) and queued, or dropped and
    counted when `capacity` Events are waiting already."""

    def __init__(
        self,
        api: KubeApi,
        *,
        instance: str,
        capacity: int = QUEUE_CAPACITY,
        senders: int = SENDERS,
    ) -> None:
        self.api = api
        self.instance = instance
        self.senders = senders
        self.queue: asyncio.Queue[Body] = asyncio.Queue(capacity)
        self.posted = 0  # created
        self.failed = 0  # refused by the API server (logged)
        self.dropped = 0  # never sent: the queue was full
        self._warned_at = -DROP_LOG_SECONDS

    def post(self, involved: Body, type_: str, reason: str, message: str) -> None:
        event = build_event(involved, type_, reason, message, instance=self.instance)
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1
            if time.monotonic() - self._warned_at >= DROP_LOG_SECONDS:
                self._warned_at = time.monotonic()
                log.warning(
                    "event queue full (%d waiting): dropped %s for %s (%d dropped so far)",
                    self.queue.maxsize,
                    reason,
                    involved["metadata"]["name"],
                    self.dropped,
                )

    async def run(self) -> None:
        """Send queued Events until cancelled."""
        senders = [asyncio.create_task(self._send()) for _ in range(self.senders)]
        try:
            await asyncio.gather(*senders)
        finally:
            for task in senders:
                task.cancel()

    async def _send(self) -> None:
        while True:
            event = await self.queue.get()
            try:
                if await _create(self.api, event):
                    self.posted += 1
                else:
                    self.failed += 1
            except Exception:  # a transport error: logged, the sender goes on
                self.failed += 1
                log.exception("could not post event %s", event["reason"])
            finally:
                self.queue.task_done()

    async def flush(self, seconds: float) -> None:
        """Wait up to `seconds` for the queued Events to be sent (on the way out; the
        senders must be running)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.queue.join(), seconds)
