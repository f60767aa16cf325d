"""The operator's view of the cluster: latest bodies from watch events and our own writes.

A reconcile that runs between our write and the watch event announcing it would
otherwise act on the old object and repeat the write; so the response of each write
is recorded here too, and the older of two versions of one object never wins.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from workgate.k8s.api import Body
from workgate.k8s.informer import strip

K = TypeVar("K", bound=Hashable)


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
        self._gone: set[str] = set()  # uids we deleted whose DELETED event is still on its way

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
        self._gone.discard(uid)
        current = self._items.get(key)
        if current is not None and _version(current)[0] == uid:
            del self._items[key]

    def forget(self, key: K, uid: str) -> None:
        """We deleted it: stop seeing it before the watch confirms."""
        current = self._items.get(key)
        if current is not None and _version(current)[0] == uid:
            del self._items[key]
        self._gone.add(uid)

    def values(self) -> list[Body]:
        return list(self._items.values())

    def get(self, key: K) -> Body | None:
        return self._items.get(key)

    def __len__(self) -> int:
        return len(self._items)
