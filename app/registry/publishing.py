"""Verified blobs on their way to the bucket: the client has its 201 while the write to the store completes.

Why: skopeo, podman and buildah push the layers of an image one after another, so every store round trip inside a
blob's final PUT is paid once per layer, and across a WAN that round trip is most of a small layer's cost. Once
the digest is verified, the bytes are safe on the staging disk; the write to the bucket can overlap the client's
next layer.

What keeps it correct:
- The session is marked verified on the staging disk (`Uploads.mark_verified`) before the 201: it takes no more
  data, and it stays until its blob is in the bucket.
- A manifest naming a blob waits for its write (`settle`) before it is checked and published, so a tag still never
  points at anything missing. A write that failed (the store down past its retries) is tried again there, and
  the manifest PUT answers 503 if it fails again: the client retries, nothing is lost.
- Another replica sharing the staging disk, or this one after a restart, finds the verified session by its digest
  and publishes it itself when a manifest (or a HEAD) needs it: every write is create-only, so two publishers of
  one blob write it once.
- Replicas with their own staging (app/cluster/) cannot see each other's verified sessions. A repository's
  requests go to its owner, which holds its writes; but when the owners change, the new owner may be asked
  about a blob its previous owner acknowledged and is still writing. Then, before it answers "absent" (a HEAD,
  a manifest's reference), it has the other replicas finish their writes of that blob (`others`).
- Shutdown waits for the writes in flight (`drain`), within the service's grace period.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from app.registry.uploads import Upload, Uploads

log = logging.getLogger("storj_registry")

Publish = Callable[[Upload, str, int], Awaitable[None]]


class OtherWriters(Protocol):
    """The other replicas, as far as their writes of verified blobs go (app/cluster/)."""

    async def settle(self, name: str, digests: list[str]) -> bool:
        """Have them finish their writes of these blobs of `name`; True if one of them was writing one (then the
        store is worth asking again)."""
        ...


class Publishing:
    def __init__(self, uploads: Uploads, publish: Publish) -> None:
        self.uploads = uploads
        self.publish = publish
        self._writes: dict[tuple[str, str], tuple[asyncio.Task[None], Upload, int]] = {}
        self.others: OtherWriters | None = None

    def start(self, upload: Upload, digest: str, size: int) -> None:
        """Write the verified session to the bucket in the background."""
        key = (upload.name, digest)
        task = asyncio.create_task(self.publish(upload, digest, size))
        self._writes[key] = (task, upload, size)
        task.add_done_callback(lambda done: self._finished(key, done))

    def _finished(self, key: tuple[str, str], task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            if self._writes.get(key, (None,))[0] is task:
                del self._writes[key]
            return
        log.warning("publishing %s of %s failed (a manifest naming it retries): %s", key[1], key[0], task.exception())

    def resume(self) -> None:
        """Publish every verified session left on the staging disk (by a process that stopped, or another
        replica's): their clients have their 201, so they must reach the bucket even if no manifest asks."""
        for upload, sealed in self.uploads.verified_sessions():
            if (upload.name, sealed.digest) not in self._writes:
                self.start(upload, sealed.digest, sealed.size)

    def size(self, name: str, digest: str) -> int | None:
        """The size of a verified blob not yet (known to be) in the bucket, or None."""
        pending = self._writes.get((name, digest))
        if pending is not None:
            return pending[2]
        found = self.uploads.find_verified(name, digest)
        return found[1] if found is not None else None

    async def settle(self, name: str, digests: Iterable[str]) -> None:
        """Wait until each of these blobs that is on its way to the bucket is there; raise if one cannot be written."""
        for digest in dict.fromkeys(digests):
            pending = self._writes.get((name, digest))
            if pending is None or (pending[0].done() and pending[0].exception() is not None):
                found = (pending[1], pending[2]) if pending else self.uploads.find_verified(name, digest)
                if found is None:
                    continue
                self.start(found[0], digest, found[1])  # another replica's, from before a restart, or a retry
                pending = self._writes[(name, digest)]
            await asyncio.shield(pending[0])

    def wrote(self, name: str, digests: Iterable[str]) -> bool:
        """Is this process writing, or did it just write (PUBLISHED_TTL_S), any of these blobs of `name`?"""
        return any(
            self.size(name, digest) is not None or self.uploads.recently_published(name, digest) is not None
            for digest in digests
        )

    async def settle_elsewhere(self, name: str, digests: list[str]) -> bool:
        """Before "absent" is answered for these blobs: have other replicas finish writing them; True if that
        may have changed the answer (ask the store again)."""
        return bool(digests) and self.others is not None and await self.others.settle(name, digests)

    async def drain(self) -> None:
        """Wait for every write in flight (shutdown)."""
        tasks = [task for task, _, _ in self._writes.values()]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
