"""A per-request round-robin HTTP/1.1 proxy: what a Kubernetes Service in front of several replicas can do.

Every request, even the next one on the same keep-alive client connection, goes to the next backend in turn over a
fresh backend connection, so the requests of one upload session land on different replicas. Bodies are relayed as
they arrive with their own framing (Content-Length or chunked, both ways), never buffered whole. Each forwarded
request is recorded for the test to check the alternation.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

HEAD_LIMIT = 64 * 1024
RELAY_CHUNK = 256 * 1024
HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade"}
METHOD_START = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")
NO_BODY_STATUSES = {204, 304}
BODY_SETTLE_SECONDS = 1.0  # after the answer, how long the last bytes of the request body may take to go through

Headers = list[tuple[bytes, bytes]]


@dataclass
class Forwarded:
    """One request as the proxy passed it on; `status` and `location` are filled in from the backend's answer."""

    backend: int
    method: str
    path: str
    status: int = 0
    location: str = ""


class _Closed(Exception):
    """The client connection must end (EOF, bad request, or a response framed by closing)."""


class RoundRobinProxy:
    """Listen on 127.0.0.1 and send request n to `backends[n % len(backends)]` (`host:port` strings)."""

    def __init__(self, backends: list[str]) -> None:
        self.backends = [_host_port(backend) for backend in backends]
        self.forwarded: list[Forwarded] = []
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="round-robin", daemon=True)
        self._server: asyncio.Server | None = None
        self._open = asyncio.Event()  # cleared by `hold`
        self._open.set()

    def __enter__(self) -> RoundRobinProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=5)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._close(self._server), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def set_backends(self, backends: list[str]) -> None:
        """From the next request on, turn over these: what a Service's endpoints do as pods become ready or drain."""
        self.backends = [_host_port(backend) for backend in backends]

    def hold(self) -> None:
        """New requests wait (those under way go on) until `release`: a change of members then comes mid-push
        however fast the pushes run on the machine."""
        self._loop.call_soon_threadsafe(self._open.clear)

    def release(self) -> None:
        self._loop.call_soon_threadsafe(self._open.set)

    @property
    def address(self) -> str:
        """`127.0.0.1:PORT`, the form image references use."""
        return self.url.removeprefix("http://")

    def counts(self) -> list[int]:
        return [sum(1 for entry in self.forwarded if entry.backend == i) for i in range(len(self.backends))]

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._client, "127.0.0.1", 0)

    @staticmethod
    async def _close(server: asyncio.Server) -> None:
        server.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 2)

    def _next_backend(self, method: str, path: str) -> tuple[Forwarded, tuple[str, int]]:
        """Pick the backend in arrival order (the event loop is single-threaded, so the order is exact)."""
        entry = Forwarded(len(self.forwarded) % len(self.backends), method, path)
        self.forwarded.append(entry)
        return entry, self.backends[entry.backend]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await self._exchange(reader, writer)
        except _Closed:
            pass
        except (ValueError, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            _reset(writer)  # a backend that died mid-answer: its client's connection is reset, as a pod's would be
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _exchange(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        """Relay one request and its response; raise _Closed when the client connection cannot carry another."""
        request_line, headers = await _read_request_head(client_reader)
        method, target, _version = request_line.split(b" ", 2)
        await self._open.wait()
        entry, (host, port) = self._next_backend(method.decode(), urlsplit(target.decode()).path)
        backend_reader, backend_writer = await asyncio.open_connection(host, port)
        try:
            backend_writer.write(_head(request_line, [*_forwardable(headers), (b"Connection", b"close")]))
            upload = asyncio.create_task(_relay_body(client_reader, backend_writer, headers))
            keep_alive = await _relay_response(backend_reader, client_writer, method, entry)
            await asyncio.wait({upload}, timeout=BODY_SETTLE_SECONDS)
            if not upload.done():  # the backend answered without reading the whole body: the stream is out of step
                upload.cancel()
                raise _Closed
            upload.result()
        finally:
            backend_writer.close()
        if not keep_alive or b"close" in _header(headers, b"connection").lower():
            raise _Closed


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (no orderly FIN): what a client of a killed process sees."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _read_request_head(reader: asyncio.StreamReader) -> tuple[bytes, Headers]:
    first = await reader.read(1)
    if not first or first[0] not in METHOD_START:  # EOF, or not HTTP at all (a TLS ClientHello from a prober)
        raise _Closed
    head = first + await reader.readuntil(b"\r\n\r\n")
    if len(head) > HEAD_LIMIT:
        raise _Closed
    return _parse_head(head)


def _parse_head(head: bytes) -> tuple[bytes, Headers]:
    start_line, *lines = head[:-4].split(b"\r\n")
    headers = []
    for line in lines:
        name, _, value = line.partition(b":")
        headers.append((name.strip(), value.strip()))
    return start_line, headers


def _head(start_line: bytes, headers: Headers) -> bytes:
    return start_line + b"\r\n" + b"".join(name + b": " + value + b"\r\n" for name, value in headers) + b"\r\n"


def _header(headers: Headers, name: bytes) -> bytes:
    return next((value for key, value in headers if key.lower() == name), b"")


def _forwardable(headers: Headers) -> Headers:
    """Drop the hop-by-hop headers, keeping Transfer-Encoding: the body is relayed in its original framing."""
    return [(name, value) for name, value in headers if name.lower() not in HOP_BY_HOP]


def _is_chunked(headers: Headers) -> bool:
    return b"chunked" in _header(headers, b"transfer-encoding").lower()


async def _relay_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: Headers) -> None:
    if _is_chunked(headers):
        await _relay_chunked(reader, writer)
    else:
        await _relay_exactly(reader, writer, int(_header(headers, b"content-length") or b"0"))


async def _relay_exactly(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, length: int) -> None:
    while length > 0:
        chunk = await reader.read(min(length, RELAY_CHUNK))
        if not chunk:
            raise _Closed
        writer.write(chunk)
        await writer.drain()
        length -= len(chunk)


async def _relay_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy a chunked body verbatim, chunk headers, trailers and final empty line included."""
    while True:
        size_line = await reader.readuntil(b"\r\n")
        writer.write(size_line)
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                writer.write(trailer)
            writer.write(b"\r\n")
            await writer.drain()
            return
        await _relay_exactly(reader, writer, size + 2)  # the chunk and its CRLF


async def _relay_response(
    backend: asyncio.StreamReader, client: asyncio.StreamWriter, method: bytes, entry: Forwarded
) -> bool:
    """Copy the backend's answer (interim 1xx answers included); True when the client connection stays usable."""
    status_line, headers = _parse_head(await backend.readuntil(b"\r\n\r\n"))
    while 100 <= (status := int(status_line.split(b" ", 2)[1])) < 200:
        client.write(_head(status_line, headers))
        status_line, headers = _parse_head(await backend.readuntil(b"\r\n\r\n"))
    entry.status, entry.location = status, _header(headers, b"location").decode("latin-1")
    framed_by_close = not _is_chunked(headers) and not _header(headers, b"content-length")
    bodiless = method == b"HEAD" or status in NO_BODY_STATUSES
    connection = b"close" if framed_by_close and not bodiless else b"keep-alive"
    client.write(_head(status_line, [*_forwardable(headers), (b"Connection", connection)]))
    if not bodiless:
        await _relay_response_body(backend, client, headers, framed_by_close)
    await client.drain()
    return connection == b"keep-alive"


async def _relay_response_body(
    backend: asyncio.StreamReader, client: asyncio.StreamWriter, headers: Headers, framed_by_close: bool
) -> None:
    if _is_chunked(headers):
        await _relay_chunked(backend, client)
    elif framed_by_close:
        while chunk := await backend.read(RELAY_CHUNK):
            client.write(chunk)
            await client.drain()
    else:
        await _relay_exactly(backend, client, int(_header(headers, b"content-length")))


def _host_port(backend: str) -> tuple[str, int]:
    host, _, port = backend.removeprefix("http://").rpartition(":")
    return host, int(port)
