"""Any replica takes any request: one that belongs to another replica is forwarded there, streaming.

A repository's requests go to its owner, an upload session's to its holder (app/cluster/members.py); the rest
(`/v2/`, `_catalog`, tokens, probes) are answered here. The client never learns which replica answered: its
request goes on with its own headers (`Authorization` included: the owner checks it), its body relayed as it
arrives, the answer relayed the same way, never buffered whole. A forwarded request carries the shared secret
(`X-Registry-Peer`), which `app.edge.ForwardedHeaders` checks, and is answered where it lands, unless that
replica is draining (then it goes once more, to the owner without it): two replicas whose views differ for a
moment never bounce a request between them.

When the owner cannot be reached before any of the body was sent, it is left out (Members.unreachable) and the
request goes to the next owner, which may be this replica. Once the body has started, a lost peer is a 404
BLOB_UPLOAD_UNKNOWN for a session's request (its holder is gone: the client starts that layer again) and a 503
for any other: both codes clients retry by themselves.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator

import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.cluster.members import HOPS_HEADER, PEER_HEADER, READY_PATH, SETTLE_PATH, Members
from app.errors import BlobUploadUnknown, RegistryError, StorageUnavailable
from app.metrics import FORWARDED
from app.registry.references import DIGEST_RE, is_name

log = logging.getLogger("storj_registry")

SESSION_PATH = re.compile(r"/v2/(?P<name>.+)/blobs/uploads/(?P<upload>[^/]+)")
REPOSITORY_PATH = re.compile(r"/v2/(?P<name>.+)/(?:blobs/|manifests/|tags/list$|referrers/)")
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade", b"transfer-encoding"}
)
SET_HERE = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", PEER_HEADER, HOPS_HEADER})
MAX_SETTLE_BODY = 256 * 1024
MAX_SETTLE_DIGESTS = 1000
RELAY_TIMEOUT = httpx.Timeout(connect=3.0, read=None, write=None, pool=30.0)  # the peer keeps the client's pace


def target(members: Members, path: str) -> str | None:
    """The peer a request for `path` belongs to, or None when this replica answers it."""
    session = SESSION_PATH.fullmatch(path)
    if session:
        return members.holder(session["upload"])
    repository = REPOSITORY_PATH.match(path)
    return members.owner(repository["name"]) if repository else None


class Forwarding:
    """ASGI middleware: answer `/_peer/ready`, and send what belongs to a peer to that peer."""

    def __init__(self, app: ASGIApp, members: Members, client: httpx.AsyncClient) -> None:
        self.app = app
        self.members = members
        self.client = client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        hops = scope.get("state", {}).get("peer_hops", 0)
        if scope["path"] == READY_PATH:
            await _answer(send, 503 if self.members.draining() else 200, b"")
            return
        if scope["path"] == SETTLE_PATH and hops:
            await _answer(send, await _settle(scope, receive), b"")
            return
        peer = target(self.members, scope["path"]) if self._may_forward(hops) else None
        if peer is None:
            await self.app(scope, receive, send)
            return
        await self._forward(peer, scope, receive, send, hops + 1)

    def _may_forward(self, hops: int) -> bool:
        """A client's request, yes; a peer's, only once more, by a draining replica (the peer's view was a
        refresh old): so no request ever bounces between replicas whose views differ."""
        return hops == 0 or (hops == 1 and self.members.draining())

    async def _forward(self, peer: str, scope: Scope, receive: Receive, send: Send, hops: int) -> None:
        body = _Body(receive)
        while True:
            try:
                response = await self.client.send(self._request(peer, scope, body, hops), stream=True)
                break
            except httpx.ConnectError as exc:
                if body.started:
                    await self._lost(peer, scope, send, body, exc)
                    return
                FORWARDED.labels(outcome="unreachable").inc()
                self.members.unreachable(peer)  # so the next owner is another replica, or this one
                rerouted = target(self.members, scope["path"])
                if rerouted is None or rerouted == peer:  # a session's holder stays its holder: here, a 404
                    await self.app(scope, receive, send)
                    return
                peer = rerouted
            except (httpx.HTTPError, _ClientGone) as exc:
                await self._lost(peer, scope, send, body, exc)
                return
        FORWARDED.labels(outcome="forwarded").inc()
        try:
            await _relay(response, send)
        finally:
            await response.aclose()

    def _request(self, peer: str, scope: Scope, body: _Body, hops: int) -> httpx.Request:
        headers = [(name, value) for name, value in scope["headers"] if name not in HOP_BY_HOP | SET_HERE]
        client = scope.get("client")
        if client:
            headers.append((b"x-forwarded-for", client[0].encode()))
        headers += [(b"x-forwarded-proto", scope["scheme"].encode()), (PEER_HEADER, self._secret)]
        headers.append((HOPS_HEADER, str(hops).encode()))
        url = peer + (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        content = body.chunks() if _has_body(scope) else None
        return self.client.build_request(scope["method"], url, headers=headers, content=content, timeout=RELAY_TIMEOUT)

    @property
    def _secret(self) -> bytes:
        return self.members.secret.encode()

    async def _lost(self, peer: str, scope: Scope, send: Send, body: _Body, exc: Exception) -> None:
        """The peer went away with the request: a session's is unknown now (its holder is gone: the client starts
        the layer again, as every client does on that code), anything else is a 503 to retry."""
        FORWARDED.labels(outcome="lost").inc()
        if body.gone:
            return
        log.warning("a request forwarded to %s was lost with the connection: %r", peer, exc)
        await body.drain()
        if SESSION_PATH.fullmatch(scope["path"]):
            error: RegistryError = BlobUploadUnknown("the replica holding this upload went away: start it again")
        else:
            error = StorageUnavailable("the replica this request belongs to went away: retry it")
        document = json.dumps(error.body()).encode()
        headers = [(b"content-type", b"application/json")] + ([(b"retry-after", b"1")] if error.status == 503 else [])
        await _answer(send, error.status, document, headers)


class _ClientGone(Exception):
    """The client went away while its body was being relayed."""


class _Body:
    """The client's body, read as the peer takes it; whether reading started (then no other peer can have it)."""

    def __init__(self, receive: Receive) -> None:
        self.receive = receive
        self.started = False
        self.complete = False
        self.gone = False

    async def drain(self) -> None:
        """Read and drop what the client still sends: a client still sending reads an early answer as a broken
        connection, and some give up rather than retry."""
        with contextlib.suppress(_ClientGone):
            async for _ in self.chunks():
                pass

    async def chunks(self) -> AsyncIterator[bytes]:
        self.started = True
        while not self.complete:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.gone = True
                raise _ClientGone
            chunk = message.get("body", b"")
            self.complete = not message.get("more_body", False)
            if chunk:
                yield chunk


async def _settle(scope: Scope, receive: Receive) -> int:
    """A peer's `POST /_peer/settle` ({"name", "digests"}): finish this replica's writes of those blobs; 200 if it
    wrote one lately (the asker's listing may be older), 204 if none."""
    body = b""
    while len(body) <= MAX_SETTLE_BODY:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    try:
        asked = json.loads(body)
        name, digests = asked["name"], asked["digests"]
    except (ValueError, KeyError, TypeError):
        return 400
    if not _well_formed(name, digests):
        return 400
    publishing = scope["app"].state.registry.blobs.publishing
    wrote = publishing.wrote(name, digests)
    try:
        await publishing.settle(name, digests)
    except Exception:  # the write failed: the asker answers from the store, and a retry tries it again
        log.warning("a peer asked for %s of %s, whose write failed", digests, name, exc_info=True)
        return 503
    return 200 if wrote else 204  # 200: one was being written here, or just was, and now is in the bucket


def _well_formed(name: object, digests: object) -> bool:
    if not (isinstance(name, str) and is_name(name) and isinstance(digests, list)):
        return False
    return len(digests) <= MAX_SETTLE_DIGESTS and all(isinstance(d, str) and DIGEST_RE.fullmatch(d) for d in digests)


def _has_body(scope: Scope) -> bool:
    headers = dict(scope["headers"])
    return headers.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in headers


async def _relay(response: httpx.Response, send: Send) -> None:
    headers = [(name, value) for name, value in response.headers.raw if name.lower() not in HOP_BY_HOP]
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    with contextlib.suppress(httpx.HTTPError):  # the peer went away mid-answer: the client sees it cut short
        async for chunk in response.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _answer(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [*(headers or []), (b"content-length", str(len(body)).encode())]
    message: Message = {"type": "http.response.start", "status": status, "headers": headers}
    await send(message)
    await send({"type": "http.response.body", "body": body})
