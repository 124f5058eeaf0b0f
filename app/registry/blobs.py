"""Blobs: committing verified uploads to the bucket, cross-repository mounts and sharing, reads and deletes.

Every existence question goes to `app.registry.known` first, which answers from memory where that is safe; every
write of a blob is create-only, so a blob another push (or replica) already wrote is not written again.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator

from anyio.to_thread import run_sync as run

from app import layout
from app.errors import BlobUnknown
from app.metrics import COMMIT_SECONDS, COMMITTED_BLOBS
from app.registry.gc_runs import GcRuns
from app.registry.indexes import Indexes
from app.registry.keyed_locks import KeyedLocks
from app.registry.known import Kind, Known
from app.registry.publishing import Publishing
from app.registry.sharing import LocationRecords
from app.registry.uploads import Upload, Uploads
from app.storage import ObjectExists, ObjectInfo, Storage, StorageFault

log = logging.getLogger("storj_registry")

# May the caller copy blobs out of this repository? (the authorization hook for automatic sharing)
SourceCheck = Callable[[str], Awaitable[bool]]

MAX_TOMBSTONES = 4096


class Blobs:
    def __init__(
        self,
        storage: Storage,
        uploads: Uploads,
        indexes: Indexes,
        known: Known,
        records: LocationRecords,
        *,
        in_background: bool = True,
        gc_runs: GcRuns | None = None,
    ) -> None:
        self.in_background = in_background
        self.gc_runs = gc_runs or GcRuns(storage, 0)  # a running gc's candidates a request relies on are claimed
        self.storage = storage
        self.uploads = uploads
        self.indexes = indexes
        self.known = known
        self.records = records
        # Concurrent pushes of one layer publish it once: Storj allows about one write per second to a key.
        self._publishing = KeyedLocks()
        # Blobs deleted from a repository through the API: a HEAD there must not share them back (bounded).
        self._deleted: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.publishing = Publishing(uploads, self._publish_verified)

    async def size(self, name: str, digest: str) -> int | None:
        """The blob's size if the repository holds it (or it is verified and on its way there), else None."""
        await self.gc_runs.claim([layout.blob(name, digest)])
        pending = self.publishing.size(name, digest)
        return pending if pending is not None else await self.known.size(name, Kind.BLOB, digest)

    async def require(self, name: str, digest: str, share_from: SourceCheck | None = None) -> ObjectInfo:
        """The blob's info, or BLOB_UNKNOWN; with `share_from`, first try copying it from another repository."""
        size = await self.size(name, digest)
        if size is None and share_from is not None and (name, digest) not in self._deleted:
            size = await self.share(name, digest, share_from)
        if size is None:
            self.uploads.wanted(name, digest)  # the client is likely to upload it next (app.registry.parts)
            raise BlobUnknown("blob unknown to registry", detail={"digest": digest})
        return ObjectInfo(size, layout.OCTET_STREAM, layout.MANIFEST_CACHE_IMMUTABLE)

    async def open(self, name: str, digest: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        await self.publishing.settle(name, [digest])
        try:
            return await run(self.storage.read, layout.blob(name, digest), start, end)
        except KeyError:  # removed since memory last saw it
            self.known.forget(name, Kind.BLOB, digest)
            raise BlobUnknown("blob unknown to registry", detail={"digest": digest}) from None

    async def commit(self, upload: Upload, digest: str) -> int:
        """Verify a finished upload and publish it under its digest; the bucket is untouched on mismatch.

        With `REGISTRY_PUBLISH_IN_BACKGROUND` (the default) the write to the bucket goes on behind the client's
        answer (see app/registry/publishing.py for why, and why that is safe); otherwise the answer waits for it.
        """
        if not self.in_background:
            async with self.uploads.lock(upload):
                size = await self.uploads.verify(upload, digest)
                await self._publish_locked(upload, digest, size)
            self._published(upload.name, digest, size)
            return size
        async with self.uploads.lock(upload):
            size = await self.uploads.verify(upload, digest)
            await run(self.uploads.mark_verified, upload, digest, size)
        self.publishing.start(upload, digest, size)
        return size

    async def _publish_verified(self, upload: Upload, digest: str, size: int) -> None:
        """Write a session verified and acknowledged earlier to the bucket (the background half of `commit`)."""
        async with self.uploads.lock(upload):
            try:
                await self._publish_locked(upload, digest, size)
            except FileNotFoundError:  # another process on the staging disk published and dropped it meanwhile
                if await run(self.storage.stat, layout.blob(upload.name, digest)) is None:
                    raise StorageFault(f"the verified upload of {digest} vanished unpublished") from None
        self._published(upload.name, digest, size)

    async def _publish_locked(self, upload: Upload, digest: str, size: int) -> None:
        key = layout.blob(upload.name, digest)
        async with self._publishing.hold(key):
            await self._publish(upload, key, digest, size)
        await self.uploads.discard(upload)

    def _published(self, name: str, digest: str, size: int) -> None:
        self.known.wrote(name, Kind.BLOB, digest, size)
        self._deleted.pop((name, digest), None)
        self.records.remember(name, digest, size)

    async def _publish(self, upload: Upload, key: str, digest: str, size: int) -> None:
        """Write a verified upload at `key` (create-only), unless it is known to be there already."""
        await self.gc_runs.claim([key])
        if self.known.vouched(upload.name, Kind.BLOB, digest):
            return
        await self.indexes.ensure_index_html()
        with COMMIT_SECONDS.time():
            if not await self.uploads.publish(upload, key, size):  # parts sent while the client uploaded
                try:
                    await run(self._put_file, upload, key)
                except ObjectExists:  # an earlier push of the same blob: the same bytes
                    return
        COMMITTED_BLOBS.labels("upload").inc()

    def _put_file(self, upload: Upload, key: str) -> None:
        self.storage.put_file(key, upload.data, layout.OCTET_STREAM, layout.MANIFEST_CACHE_IMMUTABLE, if_absent=True)

    async def share(self, name: str, digest: str, allowed: SourceCheck) -> int | None:
        """Copy `digest` into `name` from a repository known to hold it, or the one its location record names."""
        for source in self.known.holders(digest):
            if source != name and await allowed(source):
                size = await self.known.size(source, Kind.BLOB, digest)
                if size is not None and await self.mount(name, digest, source, how="share"):
                    return size
        if not self.records.exists(digest):
            return None
        source = await self.records.holder(digest)
        if source is None or source == name or not await allowed(source):
            return None
        if not await self.mount(name, digest, source, how="share"):
            return None
        return await self.known.size(name, Kind.BLOB, digest)

    async def mount(self, name: str, digest: str, source: str, how: str = "mount") -> bool:
        """Copy a blob from another repository server-side (metadata-only on Storj); False if it lacks it.

        One create-only CopyObject: it fails when the source lacks the blob and leaves the target alone when
        it already holds it, so neither needs a HEAD first.
        """
        if self.known.vouched(name, Kind.BLOB, digest):
            return True
        await self.publishing.settle(source, [digest])
        await self.indexes.ensure_index_html()
        try:
            await run(self._copy, layout.blob(source, digest), layout.blob(name, digest))
        except KeyError:
            self.known.forget(source, Kind.BLOB, digest)
            return False
        except ObjectExists:
            pass
        else:
            COMMITTED_BLOBS.labels(how).inc()
        self.known.copied_blob(name, digest, source)
        self._deleted.pop((name, digest), None)
        return True

    def _copy(self, source: str, destination: str) -> None:
        self.storage.copy(source, destination, if_absent=True)

    async def delete(self, name: str, digest: str) -> None:
        await self.publishing.settle(name, [digest])
        await self.require(name, digest)
        await run(self.storage.delete, layout.blob(name, digest))
        self.known.forget(name, Kind.BLOB, digest)
        self._deleted[(name, digest)] = None
        while len(self._deleted) > MAX_TOMBSTONES:
            self._deleted.popitem(last=False)
