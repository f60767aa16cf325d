"""KubeApi's transport in the agent: HTTP/1.1 over asyncio streams, h11 speaking the
protocol (framing, chunked bodies, keep-alive rules), TLS from the kubeconfig's context.

A small pool of keep-alive connections: a request takes an idle one (or opens one) and
gives it back once its response has been read in full and both sides may go on; anything
else (an error, a timeout, a cancelled request, a server that closes) closes it. Broken
connections surface as `ConnectionError`s (OSError), so they count as transient.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import h11

from workgate.k8s.transport import Reply

READ_SIZE = 256 * 1024
MAX_IDLE = 8  # idle connections kept for reuse; an agent rarely has more than a few in use


class ProtocolFailure(ConnectionError):
    """The server's bytes were not HTTP/1.1 we understand, or it closed mid-response."""


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.http = h11.Connection(h11.CLIENT)

    def reusable(self) -> bool:
        return (
            self.http.our_state is h11.IDLE
            and not self.writer.is_closing()
            and not self.reader.at_eof()
        )

    def close(self) -> None:
        self.writer.close()

    async def send(
        self, method: str, target: str, headers: list[tuple[str, str]], content: bytes | None
    ) -> None:
        try:
            data = self.http.send(h11.Request(method=method, target=target, headers=headers))
            if content:
                data += self.http.send(h11.Data(data=content))
            data += self.http.send(h11.EndOfMessage())
        except h11.ProtocolError as exc:
            raise ProtocolFailure(str(exc)) from exc
        self.writer.write(data)
        await self.writer.drain()

    async def next_event(self, read_timeout: float | None = None) -> h11.Event:
        while True:
            try:
                event = self.http.next_event()
            except h11.ProtocolError as exc:
                raise ProtocolFailure(str(exc)) from exc
            if event is h11.NEED_DATA:
                if read_timeout is None:
                    data = await self.reader.read(READ_SIZE)
                else:
                    async with asyncio.timeout(read_timeout):
                        data = await self.reader.read(READ_SIZE)
                try:
                    self.http.receive_data(data)  # b"": the server closed
                except h11.ProtocolError as exc:
                    raise ProtocolFailure(str(exc)) from exc
                continue
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                raise ProtocolFailure("the server closed the connection mid-response")
            assert isinstance(event, h11.Event)
            return event

    async def response(self, read_timeout: float | None = None) -> h11.Response:
        while True:
            event = await self.next_event(read_timeout)
            if isinstance(event, h11.Response):
                return event
            if not isinstance(event, h11.InformationalResponse):  # 1xx: skip
                raise ProtocolFailure(f"expected a response, got {type(event).__name__}")

    async def body(self, read_timeout: float | None = None) -> AsyncIterator[bytes]:
        while True:
            event = await self.next_event(read_timeout)
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return


class _Streamed:
    def __init__(self, connection: _Connection, head: h11.Response, read_timeout: float) -> None:
        self._connection = connection
        self._read_timeout = read_timeout
        self.status = head.status_code
        self.reason = head.reason.decode("latin-1")

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self._connection.body(self._read_timeout):
            yield chunk


class Http11Transport:
    def __init__(self, server: str, context: ssl.SSLContext | None) -> None:
        url = urlsplit(server)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"cannot reach API server {server!r}")
        self._host = url.hostname
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._ssl = context if url.scheme == "https" else None
        if url.scheme == "https" and self._ssl is None:
            self._ssl = ssl.create_default_context()
        # The Host header as the URL has it ([v6] kept); a path prefix (a proxy's) kept too.
        self._authority = url.netloc.rpartition("@")[2]
        self._prefix = url.path.rstrip("/")
        self._idle: list[_Connection] = []

    async def _connect(self) -> _Connection:
        reader, writer = await asyncio.open_connection(
            self._host,
            self._port,
            ssl=self._ssl,
            server_hostname=self._host if self._ssl else None,
            limit=READ_SIZE,
        )
        return _Connection(reader, writer)

    async def _acquire(self) -> _Connection:
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable():
                return connection
            connection.close()
        return await self._connect()

    def _release(self, connection: _Connection) -> None:
        http = connection.http
        if http.our_state is h11.DONE and http.their_state is h11.DONE:
            http.start_next_cycle()
            if len(self._idle) < MAX_IDLE and connection.reusable():
                self._idle.append(connection)
                return
        connection.close()

    def _headers(self, headers: dict[str, str], content: bytes | None) -> list[tuple[str, str]]:
        sent = [("Host", self._authority), *headers.items()]
        if content:
            sent.append(("Content-Length", str(len(content))))
        return sent

    async def send(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        content: bytes | None,
        total_seconds: float,
    ) -> Reply:
        async with asyncio.timeout(total_seconds):
            connection = await self._acquire()
            try:
                await connection.send(
                    method, self._prefix + target, self._headers(headers, content), content
                )
                head = await connection.response()
                body = b"".join([chunk async for chunk in connection.body()])
            except BaseException:
                connection.close()  # half a response, or none: never reused
                raise
        self._release(connection)
        return Reply(head.status_code, head.reason.decode("latin-1"), body)

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
        async with asyncio.timeout(connect_timeout):
            connection = await self._acquire()
        try:
            await connection.send(method, self._prefix + target, self._headers(headers, None), None)
            head = await connection.response(read_timeout)
            yield _Streamed(connection, head, read_timeout)
        except BaseException:
            connection.close()
            raise
        self._release(connection)  # reused only if the body was read to its end

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
        for connection in idle:
            with contextlib.suppress(Exception):
                await connection.writer.wait_closed()
