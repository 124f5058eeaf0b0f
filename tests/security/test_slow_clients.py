"""Slow clients cannot hold connections: a request head has a deadline, a body a minimum rate.

Before, a connection that sent nothing, or half a request line, stayed open as long as the peer liked (each one
a file descriptor), and a body trickling a byte just inside the stall timeout was never cut.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import httpx
import pytest

from app.settings import Settings
from tests.security.raw import RawClient, read

Serve = Callable[[Settings], str]
HEAD_TIMEOUT = 1.0
WAIT_LIMIT = 10.0  # far above the deadline: a connection still open then was never going to close


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)))
    connection.settimeout(WAIT_LIMIT)
    return connection


def answer_then_close(connection: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a timeout here fails the test)."""
    received = b""
    while chunk := connection.recv(4096):
        received += chunk
    return received


@pytest.mark.parametrize("sent", [b"", b"GET /v2/ HTTP/1.1\r\n", b"G", b"GET /v2/ HTTP/1.1\r\nHost: x\r\n"])
def test_a_connection_whose_request_head_does_not_come_is_closed(
    sent: bytes, auth_settings: Callable[..., Settings], serve: Serve
) -> None:
    url = serve(auth_settings(request_head_timeout=HEAD_TIMEOUT))
    with connect(url) as connection:
        connection.sendall(sent)
        started = time.monotonic()
        answer = answer_then_close(connection)
    assert HEAD_TIMEOUT * 0.8 < time.monotonic() - started < WAIT_LIMIT
    assert answer.startswith(b"HTTP/1.1 408 ")


def test_the_next_request_on_a_kept_alive_connection_has_the_same_deadline(
    auth_settings: Callable[..., Settings], serve: Serve
) -> None:
    url = serve(auth_settings(request_head_timeout=HEAD_TIMEOUT))
    with connect(url) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert connection.recv(4096).startswith(b"HTTP/1.1 200 ")
        connection.sendall(b"GET /v2/ HTTP/1.1\r\n")  # the keep-alive timer stops at the first byte; ours does not
        assert b"HTTP/1.1 408 " in answer_then_close(connection)


def test_requests_in_time_are_served_as_before(auth_settings: Callable[..., Settings], serve: Serve) -> None:
    url = serve(auth_settings(request_head_timeout=HEAD_TIMEOUT))
    with httpx.Client(base_url=url) as client:
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
            time.sleep(HEAD_TIMEOUT / 2)


def test_a_body_below_the_minimum_rate_is_cut(auth_settings: Callable[..., Settings], serve: Serve) -> None:
    """A byte every 0.3 s never stalls 1 s, but 3 bytes a second is below the 20 the settings ask for."""
    url = serve(auth_settings(upload_idle_timeout=1, min_body_rate=20))
    bob = ("bob", "bob-secret")
    location = httpx.post(f"{url}/v2/team/app/blobs/uploads/", auth=bob).headers["location"]
    auth = {"Authorization": httpx.BasicAuth(*bob)._auth_header}
    trickle = RawClient(url).send_head("PATCH", location, {**auth, "Content-Length": "100"})
    trickle.sock.settimeout(WAIT_LIMIT)
    started = time.monotonic()
    try:
        for _ in range(int(WAIT_LIMIT / 0.3)):
            trickle.send(b"x")
            time.sleep(0.3)
    except OSError:
        pass  # the server answered and closed while we were still sending
    answer = read(trickle.getresponse())
    assert answer.status == 408 and answer.error_code == "BLOB_UPLOAD_INVALID"
    assert "bytes per second" in answer.json()["errors"][0]["message"]
    assert time.monotonic() - started < WAIT_LIMIT
    assert httpx.get(f"{url}{location}", auth=bob).status_code == 404  # the session was dropped
