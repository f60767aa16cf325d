"""List and watch one collection, as client-go's reflector does, into a callback.

`Informer.run` lists (a consistent snapshot), then watches from the list's resourceVersion
with bookmarks, and lists again only when the watch is too old (410 Gone) or broken. The
list is read in pages of `page_size` (limit/continue, as client-go's pager), each delivered
as it comes (the next one asked for meanwhile): a collection of 10,000 objects is never one
response in memory. A page whose continue token is too old (410: its snapshot was compacted
away) starts the list over. A re-list reports what vanished meanwhile as DELETED (a
restarted watch never would), once its last page is read: the informer remembers a small
stub of each object it has seen (its uid, its controller's owner reference, and the spec
fields the consumer asks for in `keep_spec`: a few strings in a tuple), never whole bodies.
Transient API errors (the API server restarting) are retried with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
from collections.abc import Callable
from typing import Any

from workgate.k8s.api import ApiError, Body, KubeApi, is_transient

log = logging.getLogger(__name__)
Key = tuple[str, str]
OnEvent = Callable[[str, Body], None]
PAGE_SIZE = 500  # client-go's pager default
ABSENT_FIRST_WAIT, ABSENT_MAX_WAIT = 1.0, 30.0  # looks at a collection not served
OWNER_FIELDS = frozenset({"apiVersion", "kind", "name", "uid", "controller"})


SHARED = frozenset({"namespace", "apiVersion", "kind"})  # values many objects repeat


def _shared(field: str, value: Any) -> Any:
    return sys.intern(value) if field in SHARED and isinstance(value, str) else value


Owner = tuple[str, str, str, str]  # a controller reference: apiVersion, kind, name, uid
Stub = tuple[str, Owner | None, tuple[Any, ...]]  # uid, controller, kept spec values


def controller_ref(body: Body) -> Owner | None:
    for ref in (body.get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            return (
                sys.intern(str(ref.get("apiVersion", ""))),
                sys.intern(str(ref.get("kind", ""))),
                str(ref.get("name", "")),
                str(ref.get("uid", "")),
            )
    return None


def stub_body(key: Key, stub: Stub, keep_spec: tuple[str, ...] = ()) -> Body:
    """What a DELETED handler is given of an object it will not see again: namespace,
    name, uid, its controller's owner reference and the kept spec fields."""
    uid, owner, values = stub
    refs = []
    if owner is not None:
        api_version, kind, name, owner_uid = owner
        refs = [
            {"apiVersion": api_version, "kind": kind, "name": name, "uid": owner_uid,
             "controller": True}
        ]  # fmt: skip
    body: Body = {
        "metadata": {"namespace": key[0], "name": key[1], "uid": uid, "ownerReferences": refs}
    }
    if keep_spec:
        body["spec"] = {f: v for f, v in zip(keep_spec, values, strict=True) if v is not None}
    return body


def strip(body: Body) -> Body:
    """The body as consumers keep it: without managedFields (often half of its size)."""
    meta = body.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        body = {**body, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
    return body


def _as_is(body: Body) -> Body:
    return body


class Informer:
    def __init__(
        self,
        api: KubeApi,
        path: str,
        on_event: OnEvent,
        *,
        params: dict[str, str] | None = None,
        keep_spec: tuple[str, ...] = (),
        watch_timeout: int = 300,
        page_size: int = PAGE_SIZE,
        strip_bodies: bool = True,
    ) -> None:
        self.api, self.path, self.on_event = api, path, on_event
        self.params = dict(params or {})
        self.keep_spec = keep_spec
        self.watch_timeout = watch_timeout
        self.page_size = page_size
        # managedFields off each body, for a consumer that keeps bodies (one that only
        # takes a few values from each, as an agent's feed does, needs no copy made)
        self._strip = strip if strip_bodies else _as_is
        self.synced = asyncio.Event()
        self.lists = 0  # full lists made: start-up, then only 410s and broken watches
        self.pages = 0  # list pages read
        self.restarted_lists = 0  # lists started over: a continue token was too old
        self._absent = False
        self._absent_wait = ABSENT_FIRST_WAIT  # the next look at a collection not served
        self._known: dict[Key, Stub] = {}  # what was last seen, by (namespace, name)

    @staticmethod
    def _key(body: Body) -> Key:
        meta = body.get("metadata") or {}
        return sys.intern(str(meta.get("namespace", ""))), str(meta.get("name", ""))

    def _stub(self, body: Body) -> Stub:
        spec = body.get("spec") or {}
        values = tuple(spec.get(f) for f in self.keep_spec)
        return str(body["metadata"].get("uid", "")), controller_ref(body), values

    def stub(self, key: Key) -> Body | None:
        """The body a DELETED event of `key` would carry now."""
        known = self._known.get(key)
        return None if known is None else stub_body(key, known, self.keep_spec)

    def _deliver(self, type_: str, body: Body) -> None:
        key = self._key(body)
        if type_ == "DELETED":
            self._known.pop(key, None)
        else:
            self._known[key] = self._stub(body)
        try:
            self.on_event(type_, body)
        except Exception:  # a consumer's bug must not stop the watch
            log.exception("handling %s of %s/%s from %s", type_, *key, self.path)

    def _relisted_page(self, items: list[Any], seen: dict[Key, str]) -> None:
        """One page of a (re-)list: each item ADDED or MODIFIED, a namesake under another
        uid than the one known first DELETED. `seen` collects the page's keys and uids."""
        for item in items:
            key = self._key(item)
            uid = str(item["metadata"].get("uid", ""))
            seen[key] = uid
            known = self._known.get(key)
            if known is not None and known[0] != uid:  # replaced while not watching
                self._deliver("DELETED", stub_body(key, known, self.keep_spec))
                known = None
            self._deliver("ADDED" if known is None else "MODIFIED", item)

    def _relisted_end(self, seen: dict[Key, str]) -> None:
        """The last page is in: what is known but was not listed vanished meanwhile."""
        for key, known in list(self._known.items()):
            if key not in seen:
                self._deliver("DELETED", stub_body(key, known, self.keep_spec))

    def _relisted(self, items: list[Any]) -> None:
        """A whole (re-)list in one page."""
        seen: dict[Key, str] = {}
        self._relisted_page(items, seen)
        self._relisted_end(seen)

    async def _list(self) -> str:
        """List page by page into the consumer; the resourceVersion to watch from. The
        next page is asked for before this one is handed over, so that the server encodes
        it while the consumer works (two pages in memory at most)."""
        self.lists += 1
        seen: dict[Key, str] = {}
        first = {**self.params, "limit": str(self.page_size)}
        pending = asyncio.ensure_future(self.api.get(self.path, params=first))
        continued = False  # the page asked for is a continuation
        try:
            while True:
                try:
                    listing = await pending
                except ApiError as exc:
                    if not (exc.gone and continued):
                        raise
                    log.info("listing %s: the continue token is too old; listing anew", self.path)
                    self.restarted_lists += 1
                    seen.clear()  # what the older snapshot showed says nothing of the new one
                    pending = asyncio.ensure_future(self.api.get(self.path, params=first))
                    continued = False
                    continue
                self.pages += 1
                meta = listing.get("metadata") or {}
                token = str(meta.get("continue") or "")
                continued = bool(token)
                if token:
                    params = {**first, "continue": token}
                    pending = asyncio.ensure_future(self.api.get(self.path, params=params))
                items = [self._strip(item) for item in listing.get("items") or []]
                self._relisted_page(items, seen)
                if not token:
                    self._relisted_end(seen)
                    return str(meta.get("resourceVersion", ""))
                del listing  # the next page replaces it in memory
        finally:
            if not pending.done():
                pending.cancel()
            elif not pending.cancelled():
                pending.exception()  # retrieved: an error there was raised or is moot

    async def run(self) -> None:
        backoff = 0.2
        while True:
            try:
                version = await self._list()
                if self._absent:
                    log.info("%s is served now", self.path)
                self._absent, self._absent_wait = False, ABSENT_FIRST_WAIT
                self.synced.set()
                while True:  # watch on from `version` until it is too old or breaks
                    params = {
                        **self.params,
                        "resourceVersion": version,
                        "allowWatchBookmarks": "true",
                    }
                    async for type_, body in self.api.watch(
                        self.path, params=params, timeout_seconds=self.watch_timeout
                    ):
                        meta = body.get("metadata") or {}
                        version = str(meta.get("resourceVersion") or version)
                        if type_ != "BOOKMARK":
                            self._deliver(type_, self._strip(body))
                    backoff = 0.2
            except ApiError as exc:
                if exc.not_found:  # not served (yet): its CRD may come later, or be coming
                    if not self._absent:  # back (re-applied): look again soon, then less often
                        log.warning(
                            "%s is not served; looking again in %.0fs, then up to every %.0fs",
                            self.path,
                            self._absent_wait,
                            ABSENT_MAX_WAIT,
                        )
                    self._absent = True
                    await asyncio.sleep(self._absent_wait)
                    self._absent_wait = min(self._absent_wait * 2, ABSENT_MAX_WAIT)
                    continue
                if not (exc.gone or is_transient(exc)):
                    log.warning("watching %s: %s; retrying", self.path, exc)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.info("watching %s interrupted (%s); resuming", self.path, type(exc).__name__)
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, 5.0)
