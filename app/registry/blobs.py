"""Blobs: committing verified uploads to the bucket, cross-repository mounts and sharing, reads and deletes.

Every existence question goes to `app.registry.beliefs` first, which answers from memory where its rule allows;
every write of a blob is create-only, so a blob another push (or replica) already wrote is not written again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from anyio.to_thread import run_sync as run

from app import layout
from app.errors import BlobUnknown
from app.metrics import COMMIT_SECONDS, COMMITTED_BLOBS
from app.registry.beliefs import Beliefs, Kind
from app.registry.blob_summaries import BlobSummaries
from app.registry.documents import Documents
from app.registry.events import RegistryEvents
from app.registry.gc_runs import GcRuns
from app.registry.immutable import ImmutableTags
from app.registry.keyed_locks import KeyedLocks
from app.registry.location_records import LocationRecords
from app.registry.publishing import Publishing
from app.registry.uploads import Body, Sealed, Upload, Uploads
from app.storage import ObjectExists, ObjectInfo, Storage, StorageFault

log = logging.getLogger("storj_registry")


class SharingPolicy:
    """Who may share blobs on a HEAD miss: the caller needs push on the repository before anything is looked up,
    and pull on the source it would copy from (the authorization hook; without auth, all is open)."""

    async def may_push(self) -> bool:
        return True

    async def may_pull(self, source: str) -> bool:
        return True


class Blobs:
    def __init__(
        self,
        storage: Storage,
        uploads: Uploads,
        documents: Documents,
        beliefs: Beliefs,
        records: LocationRecords,
        gc_runs: GcRuns,
        events: RegistryEvents,
        immutable: ImmutableTags,
        *,
        in_background: bool = True,
    ) -> None:
        self.in_background = in_background
        self.events = events
        self.immutable = immutable
        self.gc_runs = gc_runs  # a running gc's candidates a request relies on are claimed
        self.storage = storage
        self.uploads = uploads
        self.documents = documents
        self.beliefs = beliefs
        self.records = records
        # Concurrent pushes of one layer publish it once: Storj allows about one write per second to a key.
        self._publishing = KeyedLocks()
        self.publishing = Publishing(uploads, self._publish_verified)
        self.summaries = BlobSummaries(storage, beliefs)

    async def size(self, name: str, digest: str) -> int | None:
        """The blob's size if the repository holds it (or it is verified and on its way there), else None.
        A client told it is there may rely on it: a gc run that starts meanwhile keeps it (`GcRuns.promised`)."""
        key = layout.blob(name, digest)
        async with self.gc_runs.relying():
            await self.gc_runs.claim([key])
            pending = self.publishing.size(name, digest)
            size = pending if pending is not None else await self.beliefs.size(name, Kind.BLOB, digest)
            if size is None and await self.publishing.settle_elsewhere(name, [digest]):
                size = await self.beliefs.ask(name, Kind.BLOB, digest)
        if size is not None:
            self.gc_runs.promised(key)
        return size

    async def require(self, name: str, digest: str, sharing: SharingPolicy | None = None) -> ObjectInfo:
        """The blob's info, or BLOB_UNKNOWN; with `sharing`, first try copying it from another repository."""
        size = await self.size(name, digest)
        if size is None and sharing is not None and self.beliefs.shareable(name, digest) and await sharing.may_push():
            size = await self.share(name, digest, sharing)
        if size is None:
            self.uploads.wanted(name, digest)  # the client is likely to upload it next (app.registry.parts)
            raise BlobUnknown("blob unknown to registry", detail={"digest": digest})
        return ObjectInfo(size, layout.OCTET_STREAM, layout.MANIFEST_CACHE_IMMUTABLE)

    async def open(self, name: str, digest: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        await self.publishing.settle(name, [digest])
        try:
            return await run(self.storage.read, layout.blob(name, digest), start, end)
        except KeyError:  # removed since memory last saw it
            self.beliefs.forget(name, Kind.BLOB, digest)
            raise BlobUnknown("blob unknown to registry", detail={"digest": digest}) from None

    async def finish_upload(self, name: str, upload_id: str, digest: str, body: Body) -> int:
        """The final PUT of an upload: its last bytes, the digest verified, the blob on its way to the bucket."""
        upload, sealed = await self.uploads.finish(name, upload_id, digest, body)
        await self._publish_sealed(upload, sealed)
        self.gc_runs.promised(layout.blob(name, digest))
        self.events.blob_pushed(name, digest, sealed.size)
        return sealed.size

    async def commit(self, upload: Upload, digest: str) -> int:
        """Verify a session whose bytes are all staged (`copy`, `sync`) and publish it under its digest."""
        sealed = await self.uploads.seal(upload, digest)
        await self._publish_sealed(upload, sealed)
        self.events.blob_pushed(upload.name, digest, sealed.size)
        return sealed.size

    async def _publish_sealed(self, upload: Upload, sealed: Sealed) -> None:
        """With `REGISTRY_PUBLISH_IN_BACKGROUND` (the default) the write to the bucket goes on behind the client's
        answer (see app/registry/publishing.py for why, and why that is safe); otherwise the answer waits for it."""
        if self.in_background:
            self.publishing.start(upload, sealed.digest, sealed.size)
        else:
            await self._publish_verified(upload, sealed.digest, sealed.size, answered=False)

    async def _publish_verified(self, upload: Upload, digest: str, size: int, *, answered: bool = True) -> None:
        """Write a verified session to the bucket (the background half of `finish_upload` and `commit`)."""
        published = await self.uploads.publish(upload, self._write, reopen_on_failure=not answered) is not None
        if (
            not published
            and not self._published_elsewhere(upload, digest)
            and not await self._in_bucket(upload, digest)
        ):
            raise StorageFault(f"the verified upload of {digest} vanished unpublished")
        self._published(upload.name, digest, size)

    async def _in_bucket(self, upload: Upload, digest: str) -> bool:
        return await run(self.storage.stat, layout.blob(upload.name, digest)) is not None

    def _published_elsewhere(self, upload: Upload, digest: str) -> bool:
        """Did a process sharing the staging disk publish the session (it is gone, its marker is there)?"""
        return self.beliefs.published_elsewhere(upload.name, digest)

    def _published(self, name: str, digest: str, size: int) -> None:
        self.beliefs.wrote(name, Kind.BLOB, digest, size)
        self.records.remember(name, digest, size)
        self.summaries.wrote(name)

    async def _write(self, upload: Upload, sealed: Sealed) -> None:
        """Write exactly the verified bytes at the blob's key (create-only), unless they are known to be there."""
        key = layout.blob(upload.name, sealed.digest)
        await self.gc_runs.claim([key])
        if self.beliefs.vouched(upload.name, Kind.BLOB, sealed.digest):
            return
        await self.documents.ensure_index_html()
        async with self._publishing.hold(key):  # concurrent pushes of one layer in this process write it once
            if self.beliefs.published_elsewhere(upload.name, sealed.digest):
                return  # another session of the same blob, published by a process sharing the staging disk
            with COMMIT_SECONDS.time():
                if not await self.uploads.write_parts(upload, key, sealed.size):  # parts sent while it arrived
                    try:
                        await run(self._put_file, upload, key, sealed.size)
                    except ObjectExists:  # an earlier push of the same blob: the same bytes
                        return
        COMMITTED_BLOBS.labels("upload").inc()

    def _put_file(self, upload: Upload, key: str, size: int) -> None:
        self.storage.put_file(
            key, upload.data, layout.OCTET_STREAM, layout.MANIFEST_CACHE_IMMUTABLE, if_absent=True, length=size
        )

    async def share(self, name: str, digest: str, sharing: SharingPolicy) -> int | None:
        """Copy `digest` into `name` from a repository known to hold it, or the one its location record names."""
        for source in self.beliefs.holders(digest):
            if source != name and await sharing.may_pull(source):
                size = await self.beliefs.size(source, Kind.BLOB, digest)
                if size is not None and await self.mount(name, digest, source, how="share", size=size):
                    return size
        if not self.records.exists(digest):
            return None
        source = await self.records.holder(digest)
        if source is None or source == name or not await sharing.may_pull(source):
            return None
        if not await self.mount(name, digest, source, how="share", announce=False):
            return None
        size = await self.beliefs.size(name, Kind.BLOB, digest)
        self.events.blob_mounted(name, digest, source, size)
        return size

    async def mount(
        self, name: str, digest: str, source: str, how: str = "mount", *, size: int | None = None, announce: bool = True
    ) -> bool:
        """Copy a blob from another repository server-side (metadata-only on Storj); False if it lacks it.

        One create-only CopyObject: it fails when the source lacks the blob and leaves the target alone when
        it already holds it, so neither needs a HEAD first.
        """
        if self.beliefs.vouched(name, Kind.BLOB, digest):
            if announce:
                self.events.blob_mounted(name, digest, source, size)
            return True
        await self.gc_runs.claim([layout.blob(source, digest), layout.blob(name, digest)])
        await self.publishing.settle(source, [digest])
        await self.documents.ensure_index_html()
        try:
            await run(self._copy, layout.blob(source, digest), layout.blob(name, digest))
        except KeyError:
            self.beliefs.forget(source, Kind.BLOB, digest)
            return False
        except ObjectExists:
            pass
        else:
            COMMITTED_BLOBS.labels(how).inc()
        self.beliefs.copied_blob(name, digest, source)
        self.summaries.wrote(name)
        self.gc_runs.promised(layout.blob(name, digest))
        if announce:
            self.events.blob_mounted(name, digest, source, size)
        return True

    def _copy(self, source: str, destination: str) -> None:
        self.storage.copy(source, destination, if_absent=True)

    async def delete(self, name: str, digest: str) -> None:
        await self.publishing.settle(name, [digest])
        await self.require(name, digest)
        await self.immutable.refuse_deleting(name, [digest], "blob")
        self.beliefs.deleted_blob(name, digest)
        await run(self.storage.delete, layout.blob(name, digest))
        self.events.blob_deleted(name, digest)
