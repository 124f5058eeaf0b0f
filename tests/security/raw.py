"""HTTP requests sent exactly as written: the target is not normalised (`..`, `%2F`, `%00` reach the server)."""

from __future__ import annotations

import http.client
import json
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error_code(self) -> str:
        return self.json()["errors"][0]["code"]


class RawClient:
    """One keep-alive connection to `base_url`, reopened whenever the server closed it."""

    def __init__(self, base_url: str, timeout: float = 30, context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.tls = parts.scheme == "https"
        self.timeout = timeout
        self.context = context
        self.connection: http.client.HTTPConnection | None = None

    def open(self) -> http.client.HTTPConnection:
        if self.tls:
            return http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self.context)
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def send_head(self, method: str, target: str, headers: dict[str, str] | None = None) -> http.client.HTTPConnection:
        """A fresh connection with the request line and headers sent; the caller sends (some of) the body."""
        connection = self.open()
        connection.putrequest(method, target, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        connection.endheaders()
        return connection

    def request(
        self, method: str, target: str, headers: dict[str, str] | None = None, body: bytes | None = None
    ) -> RawResponse:
        headers = dict(headers or {})
        if body is not None:
            headers.setdefault("Content-Length", str(len(body)))
        for attempt in range(2):
            if self.connection is None:
                self.connection = self.open()
            try:
                self.connection.putrequest(method, target, skip_accept_encoding=True)
                for name, value in headers.items():
                    self.connection.putheader(name, value)
                self.connection.endheaders(body)
                return read(self.connection.getresponse())
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if attempt:
                    raise
            except BaseException:
                self.close()  # whatever went wrong, the next request starts on a clean connection
                raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def read(response: http.client.HTTPResponse) -> RawResponse:
    """The whole response (http.client knows a HEAD answer has no body)."""
    body = response.read()
    return RawResponse(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
