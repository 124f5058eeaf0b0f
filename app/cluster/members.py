"""Who the replicas are, which of them are ready, and which one owns a repository or holds an upload session.

Members come from `REGISTRY_PEERS`: base URLs, or one `dns+http://NAME:PORT` resolved again at every refresh (a
Kubernetes headless Service resolves to the ready pods, so membership follows the cluster with no list to keep).
This replica is `REGISTRY_ADVERTISE_URL`, a member whatever the peers say.

Ready: at every refresh (`REGISTRY_PEERS_REFRESH_SECONDS`) each peer is asked `GET /_peer/ready`, which costs no
store request and proves the peer shares the secret; a peer a forward could not reach is left out at once, until
it answers a probe again. A draining replica answers "not ready" and counts itself out, so the repositories it
owned move to the others while the sessions it holds run to their end.

Owner of a repository: the ready member with the highest hash of (member, name) (rendezvous hashing): a member
joining or leaving moves only its share of the repositories. Owning is a routing preference, never a lock: two
members whose views differ for a refresh both write a repository, and every promise of the registry still holds
(docs/architecture.md); it only costs requests.

After a change of owners, for CHANGE_SECONDS: a repository's new owner may be asked about a blob its previous
owner acknowledged (201) and is still writing to the bucket. Before it answers "absent", it asks the other members
to finish their writes of that blob (`settle`, `POST /_peer/settle`); and what it believed about the bucket
before the change no longer counts (`on_change`: app/registry/beliefs.py).

Holder of an upload session: an upload id starts with its holder's member id, so its URL says where it lives
whatever happens to ownership. Only members seen in the last `REMEMBER_SECONDS` are looked up: an id never sends
a request anywhere a peer list did not name.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import anyio.to_thread
import httpx

log = logging.getLogger("storj_registry")

MEMBER_ID_LENGTH = 8  # hex digits at the start of an upload id (app/registry/staging.py keeps ids 32 hex digits)
REMEMBER_SECONDS = 24 * 3600.0  # a member's sessions are reachable this long after it was last listed
PROBE_TIMEOUT_SECONDS = 2.0
READY_PATH = "/_peer/ready"
SETTLE_PATH = "/_peer/settle"
CHANGE_SECONDS = 120.0  # how long after a change of owners a miss asks the others (a write behind a 201 is seconds)
SETTLE_TIMEOUT_SECONDS = 60.0
PEER_HEADER = b"x-registry-peer"
HOPS_HEADER = b"x-registry-peer-hops"  # how many replicas a forwarded request went through (app/cluster/forwarding.py)


def member_id(url: str) -> str:
    """The member's id as the start of its upload ids: hex digits of a hash of its advertise URL."""
    return hashlib.sha256(url.encode()).hexdigest()[:MEMBER_ID_LENGTH]


def _weight(member: str, name: str) -> bytes:
    return hashlib.sha256(f"{member}\n{name}".encode()).digest()


@dataclass
class _Member:
    url: str
    seen: float  # monotonic: when a peer list last named it
    ready: bool = False


class Members:
    def __init__(
        self,
        advertise_url: str,
        peers: str,
        secret: str,
        refresh_seconds: float,
        draining: Callable[[], bool] = lambda: False,
    ) -> None:
        self.url = advertise_url
        self.id = member_id(advertise_url)
        self.peers = peers
        self.secret = secret
        self.refresh_seconds = refresh_seconds
        self.draining = draining
        self._members: dict[str, _Member] = {}  # by member id, this replica excluded
        self._refused_secret: set[str] = set()  # peers already reported as refusing ours (said once)
        self.changed_at = -math.inf  # monotonic: when the ready members last changed
        self.on_change: Callable[[], None] = lambda: None
        self.client: httpx.AsyncClient | None = None  # for `settle`, set by `refresh`

    # who owns, who holds ------------------------------------------------------------------------------------

    def ready(self) -> list[str]:
        """The members ready to own repositories, this one included unless it is draining."""
        urls = [member.url for member in self._members.values() if member.ready]
        return urls if self.draining() else [*urls, self.url]

    def owner(self, name: str) -> str | None:
        """The URL of the member that owns repository `name`, or None when it is this one."""
        candidates = self.ready()
        if not candidates:
            return None
        best = max(candidates, key=lambda url: _weight(url, name))
        return None if best == self.url else best

    def holder(self, upload_id: str) -> str | None:
        """The URL of the peer holding session `upload_id`, or None: this one's, or nobody known (then a 404)."""
        member = self._members.get(upload_id[:MEMBER_ID_LENGTH])
        if member is None or time.monotonic() - member.seen > REMEMBER_SECONDS:
            return None
        return member.url

    def unreachable(self, url: str) -> None:
        """A forward to `url` could not connect: leave it out until it answers a probe again."""
        for member in self._members.values():
            if member.url == url and member.ready:
                member.ready = False
                log.warning("peer %s cannot be reached: its repositories move to the other replicas", url)
                self.changed(sorted(self.ready()))

    # the writes of other members ----------------------------------------------------------------------------

    async def settle(self, name: str, digests: list[str]) -> bool:
        """Have the other members finish their writes of these blobs (app/registry/publishing.py); True if one
        was writing one. Not asked when owners have not changed lately: then none writes this one's repositories."""
        if self.client is None or time.monotonic() - self.changed_at > CHANGE_SECONDS:
            return False
        now = time.monotonic()
        others = [m.url for m in self._members.values() if m.ready or now - m.seen < CHANGE_SECONDS]
        body = {"name": name, "digests": digests}
        return any(await asyncio.gather(*(self._settle_at(self.client, url, body) for url in others)))

    async def _settle_at(self, client: httpx.AsyncClient, url: str, body: dict[str, object]) -> bool:
        """True if the peer was writing one of the blobs (and now has)."""
        try:
            answer = await client.post(
                url + SETTLE_PATH, json=body, headers={PEER_HEADER: self.secret}, timeout=SETTLE_TIMEOUT_SECONDS
            )
        except httpx.HTTPError:  # gone: what it had not written is lost, as its sessions are
            return False
        return answer.status_code == 200

    # keeping the view fresh ---------------------------------------------------------------------------------

    async def watch(self, client: httpx.AsyncClient) -> None:
        """Refresh the view every `refresh_seconds` until cancelled."""
        while True:
            await asyncio.sleep(self.refresh_seconds)
            await self.refresh(client)

    async def refresh(self, client: httpx.AsyncClient) -> None:
        """Resolve the peers again and ask each whether it is ready."""
        self.client = client
        before = sorted(self.ready())
        await self._refresh(client)
        if sorted(self.ready()) != before or self.changed_at == -math.inf:
            self.changed(sorted(self.ready()))

    def changed(self, members: list[str]) -> None:
        self.changed_at = time.monotonic()
        self.on_change()
        log.info("replicas owning repositories: %s", ", ".join(members))

    async def _refresh(self, client: httpx.AsyncClient) -> None:
        try:
            urls = await anyio.to_thread.run_sync(self._resolve)
        except OSError as exc:  # DNS down: keep the last view rather than forget every peer
            log.warning("cannot resolve REGISTRY_PEERS (%s): keeping the replicas known before", exc)
            urls = [member.url for member in self._members.values() if member.ready]
        now = time.monotonic()
        listed = {member_id(url): url for url in urls if url != self.url}
        for key, url in listed.items():
            self._members.setdefault(key, _Member(url, now)).seen = now
        answers = await asyncio.gather(*(self._probe(client, url) for url in listed.values()))
        for (key, url), ready in zip(listed.items(), answers, strict=True):
            self._members[key].ready = ready
            if ready:
                self._refused_secret.discard(url)
        for key, member in list(self._members.items()):
            if key not in listed:
                member.ready = False
                if now - member.seen > REMEMBER_SECONDS:
                    del self._members[key]

    async def _probe(self, client: httpx.AsyncClient, url: str) -> bool:
        try:
            answer = await client.get(
                url + READY_PATH, headers={PEER_HEADER: self.secret}, timeout=PROBE_TIMEOUT_SECONDS
            )
        except httpx.HTTPError:
            return False
        if answer.status_code == 403 and url not in self._refused_secret:
            self._refused_secret.add(url)
            log.warning("peer %s refuses this replica's REGISTRY_PEER_SECRET: it is left out", url)
        return answer.status_code == 200

    def _resolve(self) -> list[str]:
        """The peers' base URLs now (a blocking DNS lookup for a `dns+` name)."""
        urls = [part for part in self.peers.split(",") if part]
        if len(urls) != 1 or not urls[0].startswith("dns+"):
            return urls
        parts = urlsplit(urls[0].removeprefix("dns+"))
        assert parts.hostname is not None and parts.port is not None  # checked by the settings
        found = socket.getaddrinfo(parts.hostname, parts.port, type=socket.SOCK_STREAM)
        addresses = sorted({info[4][0] for info in found})
        return [f"{parts.scheme}://{_host(address)}:{parts.port}" for address in addresses]


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address
