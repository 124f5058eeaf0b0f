"""The network edge: reverse-proxy headers, request limits, HTTPS and the security wiring of the application.

Proxy headers (`X-Forwarded-For/-Proto/-Host`) are believed only from peers in `REGISTRY_TRUSTED_PROXIES`;
from anyone else they are ignored, so a client cannot pick its own address (and dodge the login limiter) or
steer the `Location` URLs the service hands out.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import ssl
import time
from collections.abc import Awaitable, Callable, MutableMapping
from ipaddress import IPv4Network, IPv6Network, ip_address
from typing import Any

import anyio
from fastapi import Depends, FastAPI

from app import cluster
from app.api import auth as auth_api
from app.auth import Gate, UploadLimiter, guard
from app.cluster.members import HOPS_HEADER, PEER_HEADER
from app.connections import head_deadline_protocol
from app.errors import Denied, ShuttingDown
from app.registry.limits import BodyRefused
from app.settings import LOOPBACK_HOSTS, Settings, SettingsError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Networks = tuple[IPv4Network | IPv6Network, ...]

HOST_RE = re.compile(r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?")
log = logging.getLogger("storj_registry")


class IdleUpload(BodyRefused):
    status, code = 408, "BLOB_UPLOAD_INVALID"


def install(app: FastAPI, settings: Settings) -> None:
    """Attach the gate, the limits, the token endpoint and the middlewares; say so loudly when nothing guards.

    Call it before the routers are included: `guard` becomes a dependency of every route added after it.
    """
    app.router.dependencies.append(Depends(guard))
    app.include_router(auth_api.router)
    app.state.gate = Gate(settings)
    app.state.upload_limiter = UploadLimiter(settings.max_uploads_per_client)
    cluster.install(app, settings, app.state.drain)  # innermost: forwards what the limits below let through
    app.add_middleware(
        RequestLimits,
        max_header_bytes=settings.max_header_bytes,
        idle=settings.upload_idle_timeout,
        min_rate=settings.min_body_rate,
    )
    app.add_middleware(
        ForwardedHeaders,
        trusted=settings.trusted_proxies,
        service_url=settings.service_url,
        peer_secret=settings.peer_secret if settings.peers else "",
    )
    app.add_middleware(StoppedRequests)
    if not settings.auth_enabled:
        log.warning(
            "authentication is OFF: anyone who can reach this service can push and overwrite images "
            "(set REGISTRY_AUTH_HTPASSWD, see docs/security.md)"
        )


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn options for `serve`: HTTPS when configured, and h11 for its bound on request-header size (with a
    deadline on each request head, `app.connections`).

    httptools (uvicorn's default when installed) buffers headers of any size; h11 refuses an incomplete
    head past `h11_max_incomplete_event_size`. Run uvicorn with `proxy_headers=False`: `ForwardedHeaders` decides.
    """
    options: dict[str, Any] = {
        "http": head_deadline_protocol(settings.request_head_timeout),
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        "server_header": False,
    }
    if settings.tls_cert and settings.tls_key:
        check_tls_files(settings)
        options |= {"ssl_certfile": str(settings.tls_cert), "ssl_keyfile": str(settings.tls_key)}
    return options


def check_tls_files(settings: Settings) -> None:
    """Load the certificate and key once now: a wrong file is a line naming the setting, not uvicorn's traceback."""
    assert settings.tls_cert and settings.tls_key
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(settings.tls_cert, settings.tls_key)
    except OSError as exc:  # ssl.SSLError is an OSError too
        raise SettingsError.naming(
            "REGISTRY_TLS_CERT/REGISTRY_TLS_KEY", f"cannot load {settings.tls_cert} with {settings.tls_key}: {exc}"
        ) from None


class QuietProtocolErrors(logging.Filter):
    """uvicorn's "Invalid HTTP request received." warning, demoted to DEBUG.

    docker and skopeo open every connection with a TLS handshake and fall back to plain HTTP when it fails: on a
    plain port each push would log that WARNING, which tells the operator nothing. The client gets its 400.
    """

    message = "Invalid HTTP request received."

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING or record.msg != self.message:
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        record.msg = "invalid HTTP request (not HTTP, e.g. a TLS handshake on this plain-HTTP port): answered 400"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def quiet_protocol_errors() -> None:
    logging.getLogger("uvicorn.error").addFilter(QuietProtocolErrors())


def warn_if_exposed(host: str, settings: Settings) -> None:
    if host not in LOOPBACK_HOSTS and not settings.auth_enabled:
        log.warning("listening on %s without authentication: anyone on that network can push", host)
    if host not in LOOPBACK_HOSTS and not settings.tls_cert and settings.auth_enabled:
        log.warning("listening on %s over plain HTTP: passwords travel in clear unless a proxy adds TLS", host)


class StoppedRequests:
    """A request the stopping service cancels (its grace ran out, or a second Ctrl-C) is answered 503, not 500.

    uvicorn cancels the requests still running when `REGISTRY_SHUTDOWN_GRACE_SECONDS` ends, or at once on a second
    signal; the cancellation would reach uvicorn as an exception, logged as a traceback and answered 500. Nothing
    else cancels a request task, so here a cancellation means the stop. What an upload staged stays on disk.
    """

    message = "this replica stopped before the request finished: retry it (the bytes an upload sent are kept)"

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def noting_start(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, noting_start)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # answered: the request ends here rather than as a cancelled task
            if not started:  # else the response is cut short and uvicorn closes the connection
                await _refuse(send, 503, ShuttingDown(self.message).body())


class ForwardedHeaders:
    """Trust `X-Forwarded-*` from configured proxies and from replicas that prove the peer secret (app/cluster/);
    make `Location` absolute when the external URL is known.

    A request forwarded by a replica carries `X-Registry-Peer`: with the right secret it is marked as a peer's
    (answered here, never forwarded again) and its client and scheme are believed; the replica that forwarded it
    makes `Location` absolute for its client. With a wrong one it is refused 403: a client cannot pose as a peer.
    """

    def __init__(self, app: ASGIApp, trusted: Networks, service_url: str, peer_secret: str = "") -> None:
        self.app = app
        self.trusted = trusted
        self.service_url = service_url
        self.peer_secret = peer_secret.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        forwarded = ""
        peer = scope.get("client")
        claimed = next((value for name, value in scope["headers"] if name == PEER_HEADER), None)
        if claimed is not None:
            if not (self.peer_secret and hmac.compare_digest(claimed, self.peer_secret)):
                await _refuse(send, 403, Denied("X-Registry-Peer: not a replica of this cluster").body())
                return
            hops = next((value for name, value in scope["headers"] if name == HOPS_HEADER), b"1")
            scope.setdefault("state", {})["peer_hops"] = int(hops) if hops.isdigit() else 1
            self._adopt_forwarded(scope, from_peer=True)
        elif peer and self._trusts(peer[0]):
            forwarded = self._adopt_forwarded(scope)
        base = self.service_url or forwarded
        if not base:
            await self.app(scope, receive, send)
            return

        async def absolute_locations(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [_absolute(name, value, base) for name, value in message.get("headers", [])]
            await send(message)

        await self.app(scope, receive, absolute_locations)

    def _trusts(self, address: str) -> bool:
        try:
            parsed = ip_address(address)
        except ValueError:
            return False
        return any(parsed in network for network in self.trusted)

    def _adopt_forwarded(self, scope: Scope, *, from_peer: bool = False) -> str:
        """Rewrite client, scheme and host from the proxy's headers; the external base URL if they name one."""
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        forwarded_for = headers.get("x-forwarded-for", "")
        client = _address(forwarded_for) if from_peer else self._client(forwarded_for)
        if client:
            scope["client"] = (client, 0)
        proto = headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
        host = headers.get("x-forwarded-host", "").split(",")[0].strip()
        if proto in ("http", "https"):
            scope["scheme"] = proto
        if host and HOST_RE.fullmatch(host):
            scope["headers"] = [(n, v) for n, v in scope["headers"] if n != b"host"] + [(b"host", host.encode())]
        if not (proto or host):
            return ""
        current_host = host if host and HOST_RE.fullmatch(host) else headers.get("host", "")
        return f"{scope['scheme']}://{current_host}" if HOST_RE.fullmatch(current_host) else ""

    def _client(self, forwarded_for: str) -> str:
        """The right-most address that is not one of our proxies (the left ones are the client's to invent)."""
        for candidate in reversed([part.strip() for part in forwarded_for.split(",") if part.strip()]):
            try:
                ip_address(candidate)
            except ValueError:
                return ""
            if not self._trusts(candidate):
                return candidate
        return ""


def _address(text: str) -> str:
    try:
        return str(ip_address(text.strip()))
    except ValueError:
        return ""


def _absolute(name: bytes, value: bytes, base: str) -> tuple[bytes, bytes]:
    if name.lower() == b"location" and value.startswith(b"/") and not value.startswith(b"//"):
        return name, base.encode() + value
    return name, value


class RequestLimits:
    """Refuse oversized request heads (431) and request bodies that stall or trickle (408) before the application
    waits on them."""

    def __init__(self, app: ASGIApp, max_header_bytes: int, idle: float, min_rate: int = 0) -> None:
        self.app = app
        self.max_header_bytes = max_header_bytes
        self.idle = idle
        self.min_rate = min_rate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        head = len(scope.get("raw_path", b"")) + len(scope.get("query_string", b""))
        head += sum(len(name) + len(value) + 4 for name, value in scope["headers"])
        if head > self.max_header_bytes:
            await _refuse_head(send, self.max_header_bytes)
            return
        await self.app(scope, _paced(receive, self.idle, self.min_rate), send)


def _paced(receive: Receive, idle: float, min_rate: int) -> Receive:
    """`receive` that gives up when the body stalls for `idle` seconds or falls behind `min_rate` bytes a second.

    The rate is the average since the body started, after a first `idle` seconds of grace: each byte received
    buys `1 / min_rate` more seconds, so a body trickling a byte just inside every stall timeout is still cut.
    Never once the body is complete.
    """
    complete = False
    started: float | None = None  # the first read: time the service spent before reading is not the client's
    received = 0

    async def limited() -> Message:
        nonlocal complete, received, started
        if complete:
            return await receive()
        started = time.monotonic() if started is None else started
        wait = idle
        if min_rate:
            wait = min(idle, started + idle + received / min_rate - time.monotonic())
        try:
            with anyio.fail_after(max(wait, 0)):
                message = await receive()
        except TimeoutError:
            if wait < idle:
                detail = {"min_rate": min_rate, "received": received}
                raise IdleUpload(f"request body slower than {min_rate} bytes per second", detail=detail) from None
            raise IdleUpload(f"no request data for {idle:g} seconds", detail={"timeout": idle}) from None
        received += len(message.get("body", b""))
        complete = message["type"] != "http.request" or not message.get("more_body", False)
        return message

    return limited


async def _refuse_head(send: Send, limit: int) -> None:
    error = {"code": "UNSUPPORTED", "message": "request headers too large", "detail": {"limit": limit}}
    await _refuse(send, 431, {"errors": [error]})


async def _refuse(send: Send, status: int, document: dict[str, Any]) -> None:
    """An OCI error answered from the edge, outside the application's handlers; the connection is closed after."""
    body = json.dumps(document, separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(b"connection", b"close"), (b"docker-distribution-api-version", b"registry/2.0")]
    if status == 503:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
