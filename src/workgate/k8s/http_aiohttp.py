"""KubeApi's transport in the operator: one shared `aiohttp.ClientSession`, the HTTP stack
Kopf already runs there (one stack, not two: aiohttp costs a fraction of httpx's CPU per
request)."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator

import aiohttp
from yarl import URL

from workgate.k8s.transport import TRANSIENT_ERRORS, Reply

if aiohttp.ClientError not in TRANSIENT_ERRORS:
    TRANSIENT_ERRORS.append(aiohttp.ClientError)


class _Streamed:
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.reason = response.reason or ""

    async def read(self) -> bytes:
        return await self._response.read()

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.content.iter_any():
            yield chunk


class AiohttpTransport:
    def __init__(self, server: str, context: ssl.SSLContext | None) -> None:
        self._base = server.rstrip("/")
        self._ssl = context
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        """Made on first use, inside the event loop that uses it."""
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=100, ssl=self._ssl or False)
            self._session = aiohttp.ClientSession(
                connector=connector, trust_env=False, auto_decompress=True
            )
        return self._session

    async def send(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        content: bytes | None,
        total_seconds: float,
    ) -> Reply:
        limits = aiohttp.ClientTimeout(total=total_seconds)
        async with self._client().request(
            method, URL(self._base + target, encoded=True), data=content, headers=headers,
            timeout=limits,
        ) as response:  # fmt: skip
            return Reply(response.status, response.reason or "", await response.read())

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        *,
        connect_timeout: float,
        read_timeout: float,
    ) -> AsyncIterator[_Streamed]:
        limits = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=read_timeout)
        async with self._client().request(
            method, URL(self._base + target, encoded=True), headers=headers, timeout=limits
        ) as response:
            yield _Streamed(response)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
