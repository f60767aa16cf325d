"""Leader election for what must have one decider among replicas: queue admission.

Replicas share claims through per-WorkOrder Leases, but giving a limited work type's free
slots away needs one view of who holds them: only the leader admits. As client-go's
leaderelection: the leader renews every `retry_period`; it stops deciding once it has not
renewed within `renew_deadline` of its last success, which is shorter than the Lease's
duration, so a new leader takes over only after the old one has stopped. A leader that
stops cleanly releases the Lease (client-go's ReleaseOnCancel: no holder, a duration of
1 s), so the next replica leads at its next retry instead of after the whole duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from workgate.api.wire import now_utc
from workgate.core.claims import LeaseView, micro_time
from workgate.k8s.api import LEASES, ApiError, Body, KubeApi, is_transient

log = logging.getLogger(__name__)


@dataclass
class LeaderElector:
    api: KubeApi
    namespace: str
    name: str
    identity: str  # this replica (holderIdentity)
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    became_leader: asyncio.Event = field(default_factory=asyncio.Event)
    _renewed_at: float | None = field(default=None, init=False)  # monotonic, when sent

    def leading(self) -> bool:
        """True only while the last successful renewal is within the renew deadline."""
        renewed = self._renewed_at
        return renewed is not None and time.monotonic() - renewed < self.renew_deadline

    def _body(self, resource_version: str | None, acquire: str) -> Body:
        now = micro_time(now_utc())
        meta: dict[str, str] = {"name": self.name, "namespace": self.namespace}
        if resource_version:
            meta["resourceVersion"] = resource_version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": int(self.lease_duration),
                "acquireTime": acquire,
                "renewTime": now,
            },
        }

    async def try_acquire_or_renew(self) -> bool:
        sent = time.monotonic()
        path = LEASES.path(self.namespace, self.name)
        try:
            current = await self.api.get(path)
        except ApiError as exc:
            if not exc.not_found:
                raise
            try:
                body = self._body(None, "")
                body["spec"]["acquireTime"] = body["spec"]["renewTime"]
                await self.api.create(LEASES.path(self.namespace), body)
            except ApiError as create_exc:
                if create_exc.conflict:
                    return False
                raise
            self._renewed_at = sent
            return True
        view = LeaseView.from_body(current)
        if view.holder != self.identity and not view.is_stale(now_utc()):
            return False
        body = self._body(view.resource_version, "")
        spec = body["spec"]
        if view.holder == self.identity:
            del spec["acquireTime"]  # renewing: keep when it was acquired
        else:
            spec["acquireTime"] = spec["renewTime"]  # taking over a stale lead
        try:
            await self.api.merge_patch(path, {"metadata": body["metadata"], "spec": spec})
        except ApiError as exc:
            if exc.conflict:
                return False
            raise
        self._renewed_at = sent
        return True

    async def release(self) -> bool:
        """Give the lead up now, if this replica holds it; True when released."""
        if self._renewed_at is None:
            return False
        self._renewed_at = None  # stop deciding before the Lease says so
        path = LEASES.path(self.namespace, self.name)
        current = LeaseView.from_body(await self.api.get(path))
        if current.holder != self.identity:
            return False
        now = micro_time(now_utc())
        spec = {"holderIdentity": None, "leaseDurationSeconds": 1, "renewTime": now}
        meta = {"resourceVersion": current.resource_version}
        try:
            await self.api.merge_patch(path, {"metadata": meta, "spec": spec})
        except ApiError as exc:
            if exc.conflict:
                return False
            raise
        log.info("released the lead of %s/%s", self.namespace, self.name)
        return True

    async def run(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.release(), timeout=2)
            raise

    async def _run(self) -> None:
        while True:
            try:
                was = self.leading()
                if await self.try_acquire_or_renew():
                    if not was:
                        log.info("leading %s/%s as %s", self.namespace, self.name, self.identity)
                        self.became_leader.set()
                elif was:
                    log.warning("lost the lead of %s/%s", self.namespace, self.name)
            except Exception as exc:
                if not is_transient(exc) and not isinstance(exc, ApiError):
                    raise
                log.info("leader election: %s", exc or type(exc).__name__)
            await asyncio.sleep(self.retry_period)
