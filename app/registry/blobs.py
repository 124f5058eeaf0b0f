"""Blobs: committing verified uploads to the bucket, cross-repository mounts, reads and deletes."""

from __future__ import annotations

from collections.abc import Iterator

from anyio.to_thread import run_sync as run

from app import layout
from app.errors import BlobUnknown
from app.metrics import COMMITTED_BLOBS
from app.registry.indexes import Indexes
from app.registry.uploads import Upload, Uploads
from app.storage import ObjectInfo, Storage


class Blobs:
    def __init__(self, storage: Storage, uploads: Uploads, indexes: Indexes) -> None:
        self.storage = storage
        self.uploads = uploads
        self.indexes = indexes

    async def stat(self, name: str, digest: str) -> ObjectInfo | None:
        return await run(self.storage.stat, layout.blob(name, digest))

    async def require(self, name: str, digest: str) -> ObjectInfo:
        info = await self.stat(name, digest)
        if info is None:
            raise BlobUnknown("blob unknown to registry", detail={"digest": digest})
        return info

    async def open(self, name: str, digest: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        return await run(self.storage.read, layout.blob(name, digest), start, end)

    async def commit(self, upload: Upload, digest: str) -> int:
        """Verify a finished upload and publish it under its digest; the bucket is untouched on mismatch."""
        async with self.uploads.lock(upload):
            size = await self.uploads.verify(upload, digest)
            key = layout.blob(upload.name, digest)
            if await run(self.storage.stat, key) is None:
                await self.indexes.ensure_index_html()
                await run(
                    self.storage.put_file,
                    key,
                    upload.data,
                    layout.OCTET_STREAM,
                    layout.MANIFEST_CACHE_IMMUTABLE,
                )
            self.uploads.discard(upload)
        return size

    async def mount(self, name: str, digest: str, source: str) -> bool:
        """Copy a blob from another repository server-side (metadata-only on Storj); False if it lacks it."""
        if await self.stat(source, digest) is None:
            return False
        if await self.stat(name, digest) is None:
            await self.indexes.ensure_index_html()
            try:
                await run(self.storage.copy, layout.blob(source, digest), layout.blob(name, digest))
            except KeyError:
                return False
            COMMITTED_BLOBS.labels("mount").inc()
        return True

    async def delete(self, name: str, digest: str) -> None:
        await self.require(name, digest)
        await run(self.storage.delete, layout.blob(name, digest))
