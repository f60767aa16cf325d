"""What an agent may claim, kept current by watches the API server filters.

Two watches per agent, both filtered on the server: the agent's work type's WorkOrders
that are PENDING or have no phase yet (the CRD's selectableFields `spec.workType` and
`status.phase`; `api.wire.open_to_claim` has the last word), and the claim
Leases of that work type (label `workgate.io/work-type`). Nothing is listed again except
when a watch must restart (410 Gone): the re-list then replaces the whole view, since a
restarted watch does not report what vanished meanwhile. Only what choosing needs is
kept (names, uids, ages), never whole bodies.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass

from workgate.agent.spread import Peers, claimant_key, spread_score
from workgate.api.wire import (
    LABEL_MANAGED_BY,
    LABEL_WORK_TYPE,
    MANAGED_BY,
    UNCLAIMABLE_PHASES,
    open_to_claim,
)
from workgate.core.claims import (
    ANNOTATION_INSTANCE,
    ANNOTATION_RESULT,
    ANNOTATION_REVOKED,
)
from workgate.core.naming import label_value
from workgate.k8s.api import LEASES, WORKORDERS, Body, KubeApi
from workgate.k8s.informer import Informer

log = logging.getLogger(__name__)
Key = tuple[str, str]


@dataclass(frozen=True)
class Candidate:
    """What claiming needs of a claimable WorkOrder (its YAML is read once claimed)."""

    namespace: str
    name: str
    uid: str
    created: str  # creationTimestamp: oldest first
    resource_version: str
    work_type: str
    retry_count: int
    claim_timeout_seconds: int
    priority: int = 0

    def as_body(self) -> Body:
        return {
            "metadata": {"namespace": self.namespace, "name": self.name, "uid": self.uid},
            "spec": {
                "workType": self.work_type,
                "claimTimeoutSeconds": self.claim_timeout_seconds,
            },
            "status": {"retryCount": self.retry_count},
        }


# Of the highest-priority work, agents choose among this many of the oldest: old work goes
# first, bounded (a WorkOrder waits at most for the claims of those older than it, less
# this window), while each agent owns enough of the window to have work of its own
# (agent/spread.py).
OLDEST_FIRST = 128

__all__ = ["OLDEST_FIRST", "Candidate", "WorkFeed", "claimable_selector", "spread_score"]


Order = tuple[int, str, str, str]  # (-priority, created, namespace, name)


class _ByAge(MutableMapping[Key, object]):
    """The claimable WorkOrders by key, and also in the order agents take them (highest
    priority, then oldest, first): a claim looks at the first few of them, not at all
    that is pending (a backlog of thousands costs each claim nothing more)."""

    def __init__(self) -> None:
        self._items: dict[Key, Candidate] = {}
        self.order: list[Order] = []

    @staticmethod
    def _order(key: Key, candidate: Candidate) -> Order:
        return (-candidate.priority, candidate.created, key[0], key[1])

    @property
    def candidates(self) -> Mapping[Key, Candidate]:
        """By key, read-only (a change goes through this mapping, which keeps `order`)."""
        return self._items

    def __getitem__(self, key: Key) -> Candidate:
        return self._items[key]

    def __setitem__(self, key: Key, value: object) -> None:
        assert isinstance(value, Candidate)
        old = self._items.get(key)
        self._items[key] = value
        new = self._order(key, value)
        if old is not None:
            before = self._order(key, old)
            if before == new:
                return
            del self.order[bisect.bisect_left(self.order, before)]
        bisect.insort(self.order, new)

    def __delitem__(self, key: Key) -> None:
        old = self._items.pop(key)
        del self.order[bisect.bisect_left(self.order, self._order(key, old))]

    def __iter__(self) -> Iterator[Key]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


class _View:
    """One list+watch of a collection (k8s/informer.py) into a dict of small values.

    `changed` is set only by what may bring claimable work: in a view of work
    (`offers=True`) a value that is new or different, in a view of what takes work away
    (the claim Leases) a value removed or replaced. An agent waits for work only when it
    has none, so what can only take work away (another agent's claim, a report, a
    WorkOrder leaving the selector) wakes no one: at 10 agents that is most events."""

    def __init__(
        self,
        api: KubeApi,
        path: str,
        params: dict[str, str],
        extract: Callable[[Body], tuple[Key, object] | None],
        changed: asyncio.Event,
        items: MutableMapping[Key, object] | None = None,
        *,
        offers: bool,
    ) -> None:
        self.extract = extract
        self.items: MutableMapping[Key, object] = {} if items is None else items
        self.changed = changed
        self.offers = offers
        self.on_deleted: Callable[[Body], None] | None = None
        self.informer = Informer(api, path, self._apply, params=params, strip_bodies=False)

    @property
    def synced(self) -> asyncio.Event:
        return self.informer.synced

    def _apply(self, type_: str, body: Body) -> None:
        if type_ == "DELETED" and self.on_deleted is not None:
            self.on_deleted(body)
        got = self.extract(body)
        if got is None:
            return
        key, value = got
        if type_ == "DELETED":
            value = None  # gone
        old = self.items.get(key)
        if value is None:  # gone, or no longer of interest
            self.items.pop(key, None)
        else:
            self.items[key] = value
        if value != old and (value is not None if self.offers else old is not None):
            self.changed.set()

    async def run(self) -> None:
        await self.informer.run()


def claimable_selector(work_type: str) -> str:
    """The field selector of WorkOrders of `work_type` that are PENDING or have no phase
    yet: every phase but the unclaimable ones (field selectors have no "in")."""
    excluded = ",".join(f"status.phase!={phase}" for phase in UNCLAIMABLE_PHASES)
    return f"spec.workType={work_type},{excluded}"


class WorkFeed:
    """Claimable WorkOrders of one work type that no Lease claims yet, as agents see them."""

    def __init__(self, api: KubeApi, work_type: str, namespace: str | None) -> None:
        self.changed = asyncio.Event()
        selector = claimable_selector(work_type)
        self.pending = _ByAge()
        self.workorders = _View(
            api,
            WORKORDERS.path(namespace),
            {"fieldSelector": selector},
            self._workorder,
            self.changed,
            self.pending,
            offers=True,
        )
        labels = f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_WORK_TYPE}={label_value(work_type)}"
        self.leases = _View(
            api,
            LEASES.path(namespace),
            {"labelSelector": labels},
            self._lease,
            self.changed,
            offers=False,
        )
        self._tasks: list[asyncio.Task[None]] = []
        # Tried and not claimable, until they change (the watch brings a new Candidate).
        self._passed: dict[Key, Candidate] = {}
        self.peers = Peers()  # the claimants of this work type, from their Leases
        # Told (lease uid, reason) when the operator revokes a claim, or (uid, "") when a
        # claim Lease is deleted: its holder stops.
        self.on_revoked: Callable[[str, str], None] | None = None
        self.leases.on_deleted = self._lease_deleted

    @staticmethod
    def _workorder(body: Body) -> tuple[Key, object] | None:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        spec, status = body.get("spec") or {}, body.get("status") or {}
        if meta.get("deletionTimestamp") or not open_to_claim(spec, status):
            return key, None
        return key, Candidate(
            namespace=key[0],
            name=key[1],
            uid=meta["uid"],
            created=meta.get("creationTimestamp", ""),
            resource_version=str(meta.get("resourceVersion", "")),
            work_type=str(spec.get("workType", "")),
            retry_count=int(status.get("retryCount") or 0),
            claim_timeout_seconds=int(spec.get("claimTimeoutSeconds") or 3600),
            priority=int(spec.get("priority") or 0),
        )

    def _lease_deleted(self, body: Body) -> None:
        self.peers.ended(str(body["metadata"].get("uid", "")))
        if self.on_revoked is not None:
            self.on_revoked(str(body["metadata"].get("uid", "")), "")

    def _lease(self, body: Body) -> tuple[Key, object] | None:
        meta = body["metadata"]
        annotations = meta.get("annotations") or {}
        revoked = annotations.get(ANNOTATION_REVOKED)
        if revoked and self.on_revoked is not None:
            self.on_revoked(str(meta.get("uid", "")), str(revoked))
        holder = (body.get("spec") or {}).get("holderIdentity")
        if holder and self.leases.synced.is_set():  # as it happens, not the start-up list
            self.peers.saw(
                claimant_key(str(holder), str(annotations.get(ANNOTATION_INSTANCE) or "")),
                str(meta.get("uid", "")),
                open_claim=not (revoked or annotations.get(ANNOTATION_RESULT)),
                now=time.monotonic(),
            )
        for ref in meta.get("ownerReferences") or []:
            if ref.get("controller"):
                return (meta["namespace"], str(ref.get("name"))), str(ref.get("uid"))
        return None

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self.workorders.run(), name="feed-workorders"),
            asyncio.create_task(self.leases.run(), name="feed-leases"),
        ]
        await asyncio.gather(self.workorders.synced.wait(), self.leases.synced.wait())

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def claimable(self) -> list[Candidate]:
        """What no Lease claims yet, of the highest priority among it (higher first), the
        oldest `OLDEST_FIRST` of it, oldest first. Looked at before every claim: in the
        order kept as the watch brings changes, so only as far as the window reaches,
        past what is claimed or passed over."""
        pending = self.pending
        passed = self._passed
        if passed:
            for key in [k for k, c in passed.items() if pending.get(k) is not c]:
                del passed[key]  # changed since (or gone): worth a look again
        leased, skip, get = self.leases.items.get, passed.get, pending.candidates.__getitem__
        work: list[Candidate] = []
        tier = 0
        for order in pending.order:
            if work and order[0] != tier:
                break  # only the highest priority that has claimable work
            key = (order[2], order[3])
            candidate = get(key)
            if leased(key) == candidate.uid or skip(key) is candidate:
                continue
            tier = order[0]
            work.append(candidate)
            if len(work) == OLDEST_FIRST:
                break
        return work

    def pass_over(self, candidate: Candidate) -> None:
        """Claiming it failed: skip it until the watch shows it changed."""
        self._passed[(candidate.namespace, candidate.name)] = candidate

    def still_claimable(self, candidate: Candidate) -> bool:
        key = (candidate.namespace, candidate.name)
        current = self.pending.get(key)
        return current == candidate and self.leases.items.get(key) != candidate.uid

    async def wait_for_work(self) -> list[Candidate]:
        while True:
            self.changed.clear()
            work = self.claimable()
            if work:
                return work
            await self.changed.wait()
