"""The agent's HTTP/1.1 transport (k8s/http11.py) against a small HTTP server on loopback:
keep-alive reuse, chunked streams, servers that close, timeouts. (Against the real API
server: the agent integration tests, whose agents all run on it.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from workgate.k8s.api import is_transient
from workgate.k8s.http11 import Http11Transport

Handler = Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


class Server:
    """Answers each request with `handler`; counts connections and requests."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length) if length else b""
                self.requests.append(head + body)
                if not await self.handler(head, reader, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


Serve = Callable[[Handler], Awaitable[tuple[Server, str]]]


def reply(status: int, body: bytes, *extra: str) -> bytes:
    head = [f"HTTP/1.1 {status} Whatever", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def answer(raw: bytes, *, keep_open: bool) -> Handler:
    """A handler that writes `raw` bytes as its whole answer to every request, and keeps
    the connection open for the next request or closes it."""

    async def handle(_: bytes, __: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(raw)
        await writer.drain()
        return keep_open

    return handle


async def ok(head: bytes, _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    writer.write(reply(200, head.split(b" ")[1]))
    await writer.drain()
    return True


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> tuple[Server, str]:
        server = Server(handler)
        listening = await asyncio.start_server(server.serve, "127.0.0.1", 0)
        servers.append(listening)
        port = listening.sockets[0].getsockname()[1]
        return server, f"http://127.0.0.1:{port}/prefix/"

    yield start
    for listening in servers:
        listening.close()


async def test_requests_reuse_one_keep_alive_connection(serve: Serve) -> None:
    server, url = await serve(ok)
    transport = Http11Transport(url, None)
    try:
        for index in range(3):
            got = await transport.send("GET", f"/a?i={index}", {}, None, 5)
            assert (got.status, got.content) == (200, f"/prefix/a?i={index}".encode())
        posted = await transport.send("POST", "/b", {"X": "y"}, b'{"k": 1}', 5)
        assert posted.status == 200
    finally:
        await transport.aclose()
    assert server.connections == 1
    assert server.requests[-1].endswith(b'\r\n\r\n{"k": 1}')
    assert b"host: 127.0.0.1:" in server.requests[0].lower()


async def test_a_server_that_closes_gets_a_new_connection(serve: Serve) -> None:
    async def close_after(head: bytes, _: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(reply(404, b"{}", "Connection: close"))
        await w.drain()
        return False

    server, url = await serve(close_after)
    transport = Http11Transport(url, None)
    try:
        for _ in range(2):
            assert (await transport.send("GET", "/x", {}, None, 5)).status == 404
    finally:
        await transport.aclose()
    assert server.connections == 2


async def test_chunked_stream_arrives_as_it_is_sent(serve: Serve) -> None:
    release = asyncio.Event()

    async def chunked(head: bytes, _: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        w.write(b"6\r\nline1\n\r\n")
        await w.drain()
        await release.wait()  # the client must see line1 before the stream goes on
        w.write(b"6\r\nline2\n\r\n0\r\n\r\n")
        await w.drain()
        return True

    server, url = await serve(chunked)
    transport = Http11Transport(url, None)
    seen: list[bytes] = []
    try:
        async with transport.stream("GET", "/w", {}, connect_timeout=5, read_timeout=5) as got:
            assert got.status == 200
            async for chunk in got.chunks():
                seen.append(chunk)
                release.set()
        # read to its end: the connection goes back to the pool
        assert (await transport.send("GET", "/after", {}, None, 5)).status == 200
    finally:
        await transport.aclose()
    assert b"".join(seen) == b"line1\nline2\n"
    assert server.connections == 1


async def test_a_silent_stream_times_out_and_its_connection_is_dropped(serve: Serve) -> None:
    async def silent(head: bytes, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        if b"/quiet" in head:
            w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            await w.drain()
            await reader.read()  # nothing more, until the client goes away
            return False
        return await ok(head, reader, w)

    server, url = await serve(silent)
    transport = Http11Transport(url, None)
    try:
        with pytest.raises(TimeoutError) as raised:
            async with transport.stream(
                "GET", "/quiet", {}, connect_timeout=5, read_timeout=0.2
            ) as got:
                async for _ in got.chunks():
                    pass
        assert is_transient(raised.value)
        assert (await transport.send("GET", "/next", {}, None, 5)).status == 200
    finally:
        await transport.aclose()
    assert server.connections == 2


async def test_a_response_cut_short_is_a_transient_error(serve: Serve) -> None:
    cut = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this", keep_open=False)
    _, url = await serve(cut)
    transport = Http11Transport(url, None)
    try:
        with pytest.raises(ConnectionError) as raised:
            await transport.send("GET", "/x", {}, None, 5)
        assert is_transient(raised.value)
    finally:
        await transport.aclose()


async def test_a_refused_connection_is_transient() -> None:
    transport = Http11Transport("http://127.0.0.1:1", None)
    with pytest.raises(OSError) as raised:
        await transport.send("GET", "/", {}, None, 5)
    assert is_transient(raised.value)


async def test_an_interim_response_is_skipped(serve: Serve) -> None:
    interim = answer(b"HTTP/1.1 100 Continue\r\n\r\n" + reply(201, b"made"), keep_open=True)
    server, url = await serve(interim)
    transport = Http11Transport(url, None)
    try:
        got = await transport.send("POST", "/x", {}, b"{}", 5)
        assert (got.status, got.content) == (201, b"made")
        assert (await transport.send("GET", "/y", {}, None, 5)).status == 201
    finally:
        await transport.aclose()
    assert server.connections == 1


async def test_a_header_with_a_line_break_is_not_sent(serve: Serve) -> None:
    server, url = await serve(ok)
    transport = Http11Transport(url, None)
    try:
        with pytest.raises(ConnectionError):
            await transport.send("GET", "/x", {"X-Evil": "a\r\nX-Injected: 1"}, None, 5)
    finally:
        await transport.aclose()
    assert not any(b"X-Injected" in request for request in server.requests)


async def test_a_body_that_ends_with_the_connection_is_read_to_its_end(serve: Serve) -> None:
    """No Content-Length and not chunked: the body is what comes until the server closes,
    and that connection is not reused."""

    until_close = answer(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it", keep_open=False)
    server, url = await serve(until_close)
    transport = Http11Transport(url, None)
    try:
        for _ in range(2):
            got = await transport.send("GET", "/x", {}, None, 5)
            assert (got.status, got.content) == (200, b"all of it")
    finally:
        await transport.aclose()
    assert server.connections == 2
