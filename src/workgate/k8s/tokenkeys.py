"""The operator's token-key Secret: loading, refreshing, rotating and pruning its key ring."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from workgate.api.common import now_utc
from workgate.core import tokenkeys as ring_rules
from workgate.core.signals import mint_token
from workgate.k8s.api import NAMESPACES, SECRETS, WAITPOINTS, ApiError, Body, KubeApi
from workgate.k8s.waitpoints import get_or_create_secret

OPERATOR_KEY_SECRET = "workgate-token-key"
log = logging.getLogger(__name__)


class TokenKeys:
    """The key ring as the operator uses it: re-read when a key id is unknown (another
    replica minted with a newer key) and every `refresh_seconds` (to mint with the current
    key soon after a rotation)."""

    def __init__(
        self,
        api: KubeApi | None,
        namespace: str,
        ring: ring_rules.KeyRing,
        refresh_seconds: float = 60.0,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.ring = ring
        self.refresh_seconds = refresh_seconds
        self._loaded = time.monotonic()
        self._lock = asyncio.Lock()

    @classmethod
    async def load(cls, api: KubeApi, namespace: str, refresh_seconds: float = 60.0) -> TokenKeys:
        """The ring from the Secret, which the first operator to start creates. While the
        namespace is being deleted (an uninstall not yet finished), it waits for it to go
        and creates both anew."""
        backoff = 0.5
        while True:
            try:
                return await cls._load(api, namespace, refresh_seconds)
            except ApiError as exc:
                if not exc.namespace_terminating:
                    raise
                log.warning("%s; trying again in %.1fs", exc.message, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    @classmethod
    async def _load(cls, api: KubeApi, namespace: str, refresh_seconds: float) -> TokenKeys:
        try:
            await api.create(NAMESPACES.path(), {"metadata": {"name": namespace}})
        except ApiError as exc:
            if not (exc.conflict or exc.status == 403):
                raise

        def make() -> dict[str, str]:
            return ring_rules.initial_data(ring_rules.new_key_id(now_utc()), ring_rules.new_key())

        secret = await get_or_create_secret(api, namespace, OPERATOR_KEY_SECRET, make)
        return cls(api, namespace, ring_rules.parse(secret["data"]), refresh_seconds)

    async def refresh(self, *, min_age: float) -> None:
        if self.api is None:
            return
        async with self._lock:
            if time.monotonic() - self._loaded < min_age:
                return  # someone else just did
            secret = await self.api.get(SECRETS.path(self.namespace, OPERATOR_KEY_SECRET))
            self.ring = ring_rules.parse(secret["data"])
            self._loaded = time.monotonic()

    async def current(self) -> tuple[str, bytes]:
        if time.monotonic() - self._loaded >= self.refresh_seconds:
            await self.refresh(min_age=self.refresh_seconds)
        return self.ring.current, self.ring.current_key

    async def key(self, key_id: str) -> bytes | None:
        if self.ring.key(key_id) is None:
            await self.refresh(min_age=1.0)  # at most once a second for unknown ids
        return self.ring.key(key_id)

    async def token(self, meta: Body, key_id: str, algorithm: str) -> str | None:
        """A waitpoint's token (`meta`: its metadata), from the key that minted it; None if
        that key is gone."""
        key = await self.key(key_id)
        if key is None:
            return None
        return mint_token(key, meta["namespace"], meta["name"], meta["uid"], algorithm, key_id)


async def _update(api: KubeApi, namespace: str, secret: Body, data: dict[str, str]) -> None:
    """Replace the Secret's data if nobody changed it meanwhile (resourceVersion)."""
    metadata = {k: v for k, v in secret["metadata"].items() if k != "managedFields"}
    body = {**secret, "metadata": metadata, "data": data}
    await api.request("PUT", SECRETS.path(namespace, OPERATOR_KEY_SECRET), body=body)


async def rotate(api: KubeApi, namespace: str) -> str:
    """Add a new key and make it current; returns its id. Older keys stay."""
    secret = await api.get(SECRETS.path(namespace, OPERATOR_KEY_SECRET))
    key_id = ring_rules.new_key_id(now_utc())
    await _update(
        api, namespace, secret, ring_rules.rotated(secret["data"], key_id, ring_rules.new_key())
    )
    return key_id


async def keys_in_use(api: KubeApi) -> set[str]:
    """Key ids of every waitpoint that is not closed, in all namespaces."""
    used: set[str] = set()
    params = {"limit": "500"}
    while True:
        page = await api.get(WAITPOINTS.path(), params=params)
        for wp in page.get("items", []):
            status = wp.get("status") or {}
            if status.get("state") != "closed":
                used.add(status.get("tokenKeyId") or "")
        cont = (page.get("metadata") or {}).get("continue")
        if not cont:
            return used
        params = {"limit": "500", "continue": cont}


async def prune(api: KubeApi, namespace: str, in_use: Iterable[str]) -> list[str]:
    """Drop the keys no open waitpoint uses; returns the ids dropped."""
    secret = await api.get(SECRETS.path(namespace, OPERATOR_KEY_SECRET))
    data, dropped = ring_rules.pruned(secret["data"], in_use)
    if dropped:
        await _update(api, namespace, secret, data)
    return dropped


async def describe(api: KubeApi, namespace: str) -> ring_rules.KeyRing:
    secret = await api.get(SECRETS.path(namespace, OPERATOR_KEY_SECRET))
    return ring_rules.parse(secret["data"])
