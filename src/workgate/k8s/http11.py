"""KubeApi's transport in the agent: HTTP/1.1 over asyncio streams, llhttp (httptools)
parsing the responses (framing, chunked bodies, keep-alive rules), TLS from the
kubeconfig's context.

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

import httptools

from workgate.k8s.transport import Reply

READ_SIZE = 256 * 1024
MAX_IDLE = 8  # idle connections kept for reuse; an agent rarely has more than a few in use


class ProtocolFailure(ConnectionError):
    """The server's bytes were not HTTP/1.1 we understand, or it closed mid-response."""


class _Head:
    def __init__(self, status: int, reason: str) -> None:
        self.status_code, self.reason = status, reason


class _Connection:
    """One connection: requests written as bytes, responses parsed by llhttp (httptools),
    whose callbacks collect the status, the body's pieces and the message's end."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self._parser = httptools.HttpResponseParser(self)
        self._reason = b""
        self._headers_done = False
        self._pieces: list[bytes] = []
        self._complete = False
        self._idle = True  # no request in flight
        self._keep_alive = True
        self._framed = False  # the body's end is told (Content-Length or chunked), not EOF

    # httptools' callbacks
    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, _: bytes) -> None:
        if name.lower() in (b"content-length", b"transfer-encoding"):
            self._framed = True

    def on_headers_complete(self) -> None:
        self._headers_done = True
        self._keep_alive = self._parser.should_keep_alive()

    def on_body(self, piece: bytes) -> None:
        self._pieces.append(piece)

    def on_message_complete(self) -> None:
        self._complete = True

    def reusable(self) -> bool:
        return (
            self._idle
            and self._keep_alive
            and not self.writer.is_closing()
            and not self.reader.at_eof()
        )

    def close(self) -> None:
        self._keep_alive = False
        self.writer.close()

    async def send(
        self, method: str, target: str, headers: list[tuple[str, str]], content: bytes | None
    ) -> None:
        lines = [f"{method} {target} HTTP/1.1"]
        for name, value in headers:
            if any(c in value or c in name for c in "\r\n\0"):
                raise ProtocolFailure(f"header {name!r} holds a line break")
            lines.append(f"{name}: {value}")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self._idle = False
        self._reason, self._headers_done, self._complete = b"", False, False
        self._pieces, self._framed = [], False
        self.writer.write(data + content if content else data)
        await self.writer.drain()

    async def _receive(self, read_timeout: float | None) -> None:
        if read_timeout is None:
            data = await self.reader.read(READ_SIZE)
        else:
            async with asyncio.timeout(read_timeout):
                data = await self.reader.read(READ_SIZE)
        if not data:
            if self._headers_done and not self._framed:  # a body that ends with the
                self._complete, self._keep_alive = True, False  # connection (HTTP/1.0 style)
                return
            raise ProtocolFailure("the server closed the connection mid-response")
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            raise ProtocolFailure(str(exc)) from exc

    async def response(self, read_timeout: float | None = None) -> _Head:
        while True:
            while not self._headers_done:
                await self._receive(read_timeout)
            status = self._parser.get_status_code()
            if status >= 200:
                return _Head(status, self._reason.decode("latin-1"))
            # 1xx: skip it; the response proper follows on the same connection
            while not self._complete:
                await self._receive(read_timeout)
            self._reason, self._headers_done, self._complete = b"", False, False
            self._pieces, self._framed = [], False

    async def body(self, read_timeout: float | None = None) -> AsyncIterator[bytes]:
        while True:
            if self._pieces:
                pieces, self._pieces = self._pieces, []
                yield pieces[0] if len(pieces) == 1 else b"".join(pieces)
            elif self._complete:
                self._idle = True
                return
            else:
                await self._receive(read_timeout)


class _Streamed:
    def __init__(self, connection: _Connection, head: _Head, read_timeout: float) -> None:
        self._connection = connection
        self._read_timeout = read_timeout
        self.status = head.status_code
        self.reason = head.reason

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    def chunks(self) -> AsyncIterator[bytes]:
        return self._connection.body(self._read_timeout)  # no generator in between


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
        if connection.reusable() and len(self._idle) < MAX_IDLE:
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
        return Reply(head.status_code, head.reason, body)

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
