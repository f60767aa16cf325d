"""The operator's view of the cluster: latest bodies from watch events and our own writes.

A reconcile that runs between our write and the watch event announcing it would
otherwise act on the old object and repeat the write; so the response of each write
is recorded here too, and the older of two versions of one object never wins. An object
once deleted never comes back (uids are not reused): the answer to a write that lands
after its DELETED event (an agent releases the claim Lease the operator has just
revoked) is not recorded, else the cache would keep a ghost no event ever removes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from workgate.k8s.api import Body
from workgate.k8s.informer import strip

K = TypeVar("K", bound=Hashable)
# Deleted uids remembered, the oldest forgotten first: a late write answer comes within
# moments of the DELETED event, while thousands of other deletions take far longer.
GONE_REMEMBERED = 4096


def _version(body: Body) -> tuple[str, int]:
    meta = body.get("metadata", {})
    raw = str(meta.get("resourceVersion", ""))
    return str(meta.get("uid", "")), int(raw) if raw.isdigit() else -1


class ObjectCache(Generic[K]):
    """`record`: what is kept of each body (operator/records.py); by default all but its
    managedFields."""

    def __init__(self, record: Callable[[Body], Body] = strip) -> None:
        self._record = record
        self._items: dict[K, Body] = {}
        # uids deleted (by us, the DELETED event maybe still on its way, or seen deleted)
        self._gone: OrderedDict[str, None] = OrderedDict()

    def _bury(self, uid: str) -> None:
        if not uid:
            return
        self._gone[uid] = None
        self._gone.move_to_end(uid)
        while len(self._gone) > GONE_REMEMBERED:
            self._gone.popitem(last=False)

    def observe(self, key: K, body: Body) -> None:
        body = self._record(body)
        uid, version = _version(body)
        if uid in self._gone:
            return
        current = self._items.get(key)
        if current is not None:
            current_uid, current_version = _version(current)
            if current_uid == uid and current_version > version >= 0:
                return
        self._items[key] = body

    def deleted(self, key: K, body: Body) -> None:
        uid, _ = _version(body)
        self._bury(uid)
        current = self._items.get(key)
        if current is not None and _version(current)[0] == uid:
            del self._items[key]

    def forget(self, key: K, uid: str) -> None:
        """We deleted it: stop seeing it before the watch confirms."""
        current = self._items.get(key)
        if current is not None and _version(current)[0] == uid:
            del self._items[key]
        self._bury(uid)

    def values(self) -> list[Body]:
        return list(self._items.values())

    def get(self, key: K) -> Body | None:
        return self._items.get(key)

    def __len__(self) -> int:
        return len(self._items)
