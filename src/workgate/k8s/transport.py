"""How KubeApi's requests travel: one of two HTTP clients behind one small interface.

- `aiohttp` (k8s/http_aiohttp.py): the operator's, the HTTP stack Kopf already runs in it.
- `http11` (k8s/http11.py): a small HTTP/1.1 client over asyncio streams, for the agent
  process, which would otherwise load aiohttp (about 13 MB resident) for a handful of
  requests a second.

Each is imported only when chosen. A transport sends whole requests (`send`) and streams
responses (`stream`, for watches); the caller (KubeApi) owns paths, credentials and JSON.
Errors a transport raises for a broken connection are `OSError`s or `TimeoutError`, or of a
type it registers with `TRANSIENT_ERRORS`, so `k8s.api.is_transient` knows them.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Literal, Protocol

TransportName = Literal["aiohttp", "http11"]

# Exception types that mean "the connection or the server failed, try again": transports
# add their own on import (aiohttp's ClientError), so only a loaded transport's count.
TRANSIENT_ERRORS: list[type[BaseException]] = [TimeoutError, OSError]


class Reply:
    """A response read in full."""

    __slots__ = ("content", "reason", "status")

    def __init__(self, status: int, reason: str, content: bytes) -> None:
        self.status, self.reason, self.content = status, reason, content


class Streamed(Protocol):
    """A response whose body is read as it arrives."""

    status: int
    reason: str

    async def read(self) -> bytes: ...

    def chunks(self) -> AsyncIterator[bytes]: ...


class Transport(Protocol):
    async def send(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        content: bytes | None,
        total_seconds: float,
    ) -> Reply:
        """`target`: the path and encoded query, appended to the server's URL."""
        ...

    def stream(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        *,
        connect_timeout: float,
        read_timeout: float,
    ) -> AbstractAsyncContextManager[Streamed]:
        """The response once its head has arrived; each read waits `read_timeout` at most."""
        ...

    async def aclose(self) -> None: ...


def make_transport(name: TransportName, server: str, context: ssl.SSLContext | None) -> Transport:
    if name == "http11":
        from workgate.k8s.http11 import Http11Transport

        return Http11Transport(server, context)
    if name == "aiohttp":
        from workgate.k8s.http_aiohttp import AiohttpTransport

        return AiohttpTransport(server, context)
    raise ValueError(f"unknown HTTP transport {name!r}")
