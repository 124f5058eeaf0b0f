"""Blobs: committing verified uploads to the bucket, cross-repository mounts and sharing, reads and deletes."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator

from anyio.to_thread import run_sync as run

from app import layout
from app.errors import BlobUnknown
from app.metrics import COMMIT_SECONDS, COMMITTED_BLOBS
from app.registry.gc_runs import GcRuns
from app.registry.indexes import Indexes
from app.registry.keyed_locks import KeyedLocks
from app.registry.references import NAME_RE
from app.registry.uploads import Upload, Uploads
from app.storage import ObjectInfo, Storage, StorageFault

log = logging.getLogger("storj_registry")

# May the caller copy blobs out of this repository? (the authorization hook for automatic sharing)
SourceCheck = Callable[[str], Awaitable[bool]]


class Blobs:
    def __init__(self, storage: Storage, uploads: Uploads, indexes: Indexes, gc_runs: GcRuns | None = None) -> None:
        self.storage = storage
        self.uploads = uploads
        self.indexes = indexes
        self.gc_runs = gc_runs or GcRuns(storage, 0)  # a running gc's candidates a request relies on are claimed
        # Concurrent pushes of one layer publish it once: Storj allows about one write per second to a key.
        self._publishing = KeyedLocks()

    async def stat(self, name: str, digest: str) -> ObjectInfo | None:
        await self.gc_runs.claim([layout.blob(name, digest)])
        return await run(self.storage.stat, layout.blob(name, digest))

    async def require(self, name: str, digest: str, share_from: SourceCheck | None = None) -> ObjectInfo:
        """The blob's info, or BLOB_UNKNOWN; with `share_from`, first try copying it from another repository."""
        info = await self.stat(name, digest)
        if info is None and share_from is not None:
            info = await self.share(name, digest, share_from)
        if info is None:
            self.uploads.wanted(name, digest)  # the client is likely to upload it next (app.registry.parts)
            raise BlobUnknown("blob unknown to registry", detail={"digest": digest})
        return info

    async def open(self, name: str, digest: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        return await run(self.storage.read, layout.blob(name, digest), start, end)

    async def commit(self, upload: Upload, digest: str) -> int:
        """Verify a finished upload and publish it under its digest; the bucket is untouched on mismatch."""
        async with self.uploads.lock(upload):
            size = await self.uploads.verify(upload, digest)
            key = layout.blob(upload.name, digest)
            async with self._publishing.hold(key):
                await self._publish(upload, key, digest, size)
            await self.uploads.discard(upload)
        return size

    async def _publish(self, upload: Upload, key: str, digest: str, size: int) -> None:
        """Write a verified upload at `key`, unless an earlier push of the same blob already did."""
        await self.gc_runs.claim([key])
        if await run(self.storage.stat, key) is not None:
            return
        await self.indexes.ensure_index_html()
        with COMMIT_SECONDS.time():
            if not await self.uploads.publish(upload, key, size):  # parts sent while the client uploaded
                await run(self.storage.put_file, key, upload.data, layout.OCTET_STREAM, layout.MANIFEST_CACHE_IMMUTABLE)
        COMMITTED_BLOBS.labels("upload").inc()
        await self._remember(upload.name, digest)

    async def _remember(self, name: str, digest: str) -> None:
        """Record that `name` holds `digest`, so other repositories can share it without listing the bucket.

        Best effort: the blob is already committed, and a missing or stale record only costs a later upload.
        """
        try:
            await run(
                self.storage.put_bytes, layout.blob_location(digest), name.encode(), layout.TEXT, layout.MUTABLE_CACHE
            )
        except StorageFault as exc:
            log.warning("could not record the location of %s: %s", digest, exc)

    async def share(self, name: str, digest: str, allowed: SourceCheck) -> ObjectInfo | None:
        """Copy `digest` into `name` from the repository its location record names, if that one still has it.

        A record is only a hint (the source may have lost the blob since), so `mount` checks the source first.
        """
        found = await run(self.storage.read_small, layout.blob_location(digest))
        if found is None:
            return None
        source = found[0].decode("utf-8", "replace")
        if source == name or not NAME_RE.fullmatch(source) or not await allowed(source):
            return None
        if not await self.mount(name, digest, source, how="share"):
            return None
        return await self.stat(name, digest)

    async def mount(self, name: str, digest: str, source: str, how: str = "mount") -> bool:
        """Copy a blob from another repository server-side (metadata-only on Storj); False if it lacks it."""
        if await self.stat(source, digest) is None:
            return False
        if await self.stat(name, digest) is None:
            await self.indexes.ensure_index_html()
            try:
                await run(self.storage.copy, layout.blob(source, digest), layout.blob(name, digest))
            except KeyError:
                return False
            COMMITTED_BLOBS.labels(how).inc()
        return True

    async def delete(self, name: str, digest: str) -> None:
        await self.require(name, digest)
        await run(self.storage.delete, layout.blob(name, digest))
