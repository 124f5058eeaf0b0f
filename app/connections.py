"""What one client connection may hold: a deadline on each request head.

uvicorn's h11 protocol waits for a request head for as long as the peer keeps the socket open: only a connection
that already answered a request has a (keep-alive) timer, and any byte cancels it. A client that opens
connections and sends nothing, or half a request line, would hold a file descriptor each forever. Here every
request head must be complete within `REGISTRY_REQUEST_HEAD_TIMEOUT` seconds of the connection opening (or of
the previous response ending); otherwise the connection is answered 408 and closed. Bodies have their own
limits (`app.edge.RequestLimits`: a stall timeout and a minimum rate).
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class HeadDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose request head does not arrive in time."""

    head_timeout: float = 20.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.head_deadline: asyncio.TimerHandle | None = None
        self._await_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the head is in: the body has its own limits
            self._cancel_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.IDLE:  # a new cycle started: the next head is due in time too
            self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def _await_head(self) -> None:
        self._cancel_deadline()
        if not self.transport.is_closing():
            self.head_deadline = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _cancel_deadline(self) -> None:
        deadline = getattr(self, "head_deadline", None)
        if deadline is not None:
            deadline.cancel()
            self.head_deadline = None

    def _head_timed_out(self) -> None:
        self.head_deadline = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        self.transport.write(TIMED_OUT)
        self.transport.close()


def head_deadline_protocol(head_timeout: float) -> type[HeadDeadlineProtocol]:
    """The protocol class to give uvicorn (`http=`), with this deadline."""
    return type("HeadDeadlineProtocol", (HeadDeadlineProtocol,), {"head_timeout": head_timeout})
