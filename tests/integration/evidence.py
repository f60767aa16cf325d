"""Evidence from outside the operator: the test's own record of what the API server saw.

The operator's status is its own bookkeeping. A `WatchRecorder` lists a collection once
(before the test acts) and watches from that list's resourceVersion, so every object
created afterwards arrives as an ADDED event with its uid — even one deleted again before
anyone lists it. A watch that expires is resumed from the last resourceVersion seen; a
410 Gone (events lost) fails the test rather than being papered over by a re-list.

`ShipwrightStandIn` plays the Shipwright controller from that record: it finishes each
BuildRun once and keeps the resourceVersion of the finishing write, so that attempts can
be ordered by the API server's own clock (resourceVersions of one resource are
comparable integers, KEP-5504).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from workgate.api.common import format_time, now_utc
from workgate.k8s.api import BUILDRUNS, ApiError, Body, KubeApi, is_transient


@dataclass(frozen=True)
class Seen:
    type: str  # ADDED, MODIFIED or DELETED
    body: Body
    at: float  # time.monotonic() when the test received it

    @property
    def name(self) -> str:
        name: str = self.body["metadata"]["name"]
        return name

    @property
    def uid(self) -> str:
        uid: str = self.body["metadata"]["uid"]
        return uid

    @property
    def resource_version(self) -> int:
        return int(self.body["metadata"]["resourceVersion"])


# A resource's watch cache answers 429 "storage is (re)initializing" for a moment after
# its CRD is established (or the API server restarted); lists and watches are retried.
INITIALIZING_TIMEOUT = 60.0
# How long a recorder (with `outages=True`) or stand-in waits for a killed API server.
OUTAGE_TIMEOUT = 180.0


def _initializing(exc: ApiError) -> bool:
    return exc.status == 429


def owner_name(body: Body) -> str | None:
    """The name of the object's controlling owner, if any."""
    for ref in body["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            name: str = ref["name"]
            return name
    return None


class _Background:
    """One background task; leaving the `async with` block cancels it, and re-raises
    what made it stop early (a failed watch fails the test)."""

    _task: asyncio.Task[None] | None = None

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        self._task = asyncio.create_task(work)

    def check(self) -> None:
        if self._task is not None and self._task.done():
            self._task.result()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        if task.done():
            task.result()
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class WatchRecorder(_Background):
    """`async with WatchRecorder(api, path) as rec:` records every event until the block ends.

    `outages=True` is for tests that kill the API server: while it is unreachable the watch
    is retried (for up to OUTAGE_TIMEOUT), and a restarted server, whose watch cache starts
    anew, may answer 410 Gone; then the recorder lists again and records what changed since
    (new objects as ADDED, changed ones as MODIFIED, vanished ones as DELETED), counting
    each such re-list in `relists` so the test can say how much it saw only by listing.
    """

    def __init__(self, api: KubeApi, path: str, *, outages: bool = False) -> None:
        self.api = api
        self.path = path
        self.outages = outages
        self.events: list[Seen] = []
        self.relists = 0
        self._version = ""
        self._latest: dict[str, Body] = {}  # uid -> last body seen (outages only)

    async def __aenter__(self) -> WatchRecorder:
        listing = await self._list()
        self._version = listing["metadata"]["resourceVersion"]
        self.events = []
        for item in listing["items"]:
            self._record(Seen("ADDED", item, time.monotonic()))
        self._start(self._run())
        return self

    def _record(self, seen: Seen) -> None:
        self.events.append(seen)
        if self.outages:
            if seen.type == "DELETED":
                self._latest.pop(seen.uid, None)
            else:
                self._latest[seen.uid] = seen.body

    def _retryable(self, exc: Exception) -> bool:
        if isinstance(exc, ApiError) and _initializing(exc):
            return True
        return self.outages and is_transient(exc)

    async def _list(self) -> Body:
        timeout = OUTAGE_TIMEOUT if self.outages else INITIALIZING_TIMEOUT
        deadline = time.monotonic() + timeout
        while True:
            try:
                return await self.api.get(self.path)
            except Exception as exc:
                if not self._retryable(exc) or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.2)

    async def _relist(self) -> None:
        """After a 410 Gone: record the difference between the last seen state and a list."""
        listing = await self._list()
        now = time.monotonic()
        listed = {item["metadata"]["uid"]: item for item in listing["items"]}
        for uid, body in list(self._latest.items()):
            if uid not in listed:
                self._record(Seen("DELETED", body, now))
        for uid, item in listed.items():
            known = self._latest.get(uid)
            if known is None:
                self._record(Seen("ADDED", item, now))
            elif known["metadata"]["resourceVersion"] != item["metadata"]["resourceVersion"]:
                self._record(Seen("MODIFIED", item, now))
        self._version = listing["metadata"]["resourceVersion"]
        self.relists += 1

    async def _run(self) -> None:
        refused_since: float | None = None
        timeout = OUTAGE_TIMEOUT if self.outages else INITIALIZING_TIMEOUT
        while True:
            params = {"resourceVersion": self._version}
            try:
                async for kind, body in self.api.watch(
                    self.path, params=params, timeout_seconds=290
                ):
                    refused_since = None
                    if kind not in ("ADDED", "MODIFIED", "DELETED"):
                        raise AssertionError(f"the watch of {self.path} ended: {kind} {body}")
                    self._version = body["metadata"]["resourceVersion"]
                    self._record(Seen(kind, body, time.monotonic()))
            except Exception as exc:
                if self.outages and isinstance(exc, ApiError) and exc.gone:
                    await self._relist()
                    continue
                refused_since = refused_since or time.monotonic()
                if not self._retryable(exc) or time.monotonic() - refused_since > timeout:
                    raise
                await asyncio.sleep(0.2)  # resumed from the same version: nothing is lost

    def of(self, kind: str, where: Callable[[Body], bool] = lambda _: True) -> list[Seen]:
        return [e for e in self.events if e.type == kind and where(e.body)]

    def added(self, where: Callable[[Body], bool] = lambda _: True) -> list[Seen]:
        return self.of("ADDED", where)

    def _seen(self, uid: str, resource_version: int) -> bool:
        return any(e.uid == uid and e.resource_version == resource_version for e in self.events)

    async def caught_up(self, timeout: float = 30.0) -> None:
        """Wait until the record holds every object of a fresh list at its listed version:
        nothing that exists now is missing from what the record says happened."""
        deadline = time.monotonic() + timeout
        missing: list[str] = []
        while time.monotonic() < deadline:
            self.check()
            listing = await self._list()
            missing = [
                item["metadata"]["name"]
                for item in listing["items"]
                if not self._seen(item["metadata"]["uid"], int(item["metadata"]["resourceVersion"]))
            ]
            if not missing:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"the watch of {self.path} did not catch up with a list: {missing}")


class ShipwrightStandIn(_Background):
    """Finishes every BuildRun the recorder saw created, once, as `succeeded(body)` says.

    `delay(body)` seconds after it saw the run (default: at once), so that a run takes time,
    as a real build does; `started[uid]` and `ended[uid]` (time.monotonic()) are when the
    stand-in began and finished it: an execution, as the executor itself saw it. With
    `outages=True` a finishing write that cannot reach the API server is tried again."""

    def __init__(
        self,
        api: KubeApi,
        namespace: str,
        runs: WatchRecorder,
        succeeded: Callable[[Body], bool] = lambda _: True,
        *,
        delay: Callable[[Body], float] | None = None,
        outages: bool = False,
    ) -> None:
        self.api, self.namespace, self.runs, self.succeeded = api, namespace, runs, succeeded
        self.delay, self.outages = delay, outages
        self.finished: dict[str, int] = {}  # BuildRun uid -> resourceVersion of the finish
        self.started: dict[str, float] = {}
        self.ended: dict[str, float] = {}
        self.outcome: dict[str, bool] = {}  # uid -> succeeded, as written
        self._pending: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> ShipwrightStandIn:
        self._start(self._run())
        return self

    async def _run(self) -> None:
        try:
            while True:
                self.runs.check()
                for seen in self.runs.added():
                    if seen.uid not in self.started:
                        self.started[seen.uid] = time.monotonic()
                        if self.delay is None:
                            await self._finish(seen)
                        else:
                            self._pending.add(asyncio.create_task(self._later(seen)))
                for task in [t for t in self._pending if t.done()]:
                    self._pending.discard(task)
                    task.result()
                await asyncio.sleep(0.1)
        finally:
            for task in self._pending:
                task.cancel()

    async def _later(self, seen: Seen) -> None:
        assert self.delay is not None
        await asyncio.sleep(self.delay(seen.body))
        await self._finish(seen)

    async def _finish(self, seen: Seen) -> None:
        ok = self.succeeded(seen.body)
        condition = {
            "type": "Succeeded",
            "status": "True" if ok else "False",
            "reason": "Succeeded" if ok else "Failed",
            "message": "All Steps have completed executing" if ok else "step failed",
            "lastTransitionTime": format_time(now_utc().replace(microsecond=0)),
        }
        # The uid makes the write a precondition: never finish a namesake by mistake.
        patch = {"metadata": {"uid": seen.uid}, "status": {"conditions": [condition]}}
        deadline = time.monotonic() + OUTAGE_TIMEOUT
        while True:
            try:
                written = await self.api.merge_patch(
                    BUILDRUNS.path(self.namespace, seen.name, "status"), patch
                )
                break
            except ApiError as exc:
                if exc.not_found or exc.conflict:
                    self.finished[seen.uid] = 0  # gone, or a namesake: nothing left to finish
                    self.ended[seen.uid] = time.monotonic()
                    return
                if not (self.outages and is_transient(exc)) or time.monotonic() > deadline:
                    raise
            except Exception as exc:
                if not (self.outages and is_transient(exc)) or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.2)
        self.ended[seen.uid] = time.monotonic()
        self.outcome[seen.uid] = ok
        self.finished[seen.uid] = int(written["metadata"]["resourceVersion"])
