"""What one upload may take from the staging disk: a largest blob, and a free-space floor nobody may dig into.

Checked while the body streams in, before the bytes reach the staged file, so an oversized or disk-filling
upload is refused as it happens, not after; the session of a refused body is dropped (see `app.api.uploads`).
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

from app.errors import RegistryError

STAGING_FULL_RETRY_AFTER = "60"
DISK_CHECK_BYTES = 4 * 1024 * 1024


class BodyRefused(RegistryError):
    """A request body that must not be kept: the chunk it belonged to is rolled back."""


class BlobTooLarge(BodyRefused):
    status, code = 413, "SIZE_INVALID"


class StagingFull(BodyRefused):
    status, code = 507, "UNAVAILABLE"


class StagingLimits:
    def __init__(self, root: Path, max_blob_bytes: int, min_free_bytes: int) -> None:
        self.root = root
        self.max_blob_bytes = max_blob_bytes
        self.min_free_bytes = min_free_bytes

    def watch(self, body: AsyncIterator[bytes], size: int, declared: int | None) -> AsyncIterator[bytes]:
        """`body` appended to an upload of `size` bytes, refused as soon as it would break a limit.

        A declared length (Content-Length, Content-Range) that is already too large is refused before any
        byte is read; the disk is asked again after every `DISK_CHECK_BYTES` received.
        """
        if declared is not None:
            self._check_size(size + declared)
        self.check_free(declared or 0)
        return self._watched(body, size)

    async def _watched(self, body: AsyncIterator[bytes], size: int) -> AsyncIterator[bytes]:
        unchecked = 0
        async for chunk in body:
            size += len(chunk)
            unchecked += len(chunk)
            self._check_size(size)
            if unchecked >= DISK_CHECK_BYTES:
                self.check_free(unchecked)
                unchecked = 0
            yield chunk

    def check_free(self, incoming: int = 0) -> None:
        """Refuse (507) data that would take the staging disk below the free-space floor."""
        free = shutil.disk_usage(self.root).free
        if free - incoming < self.min_free_bytes:
            raise StagingFull(
                "the staging disk is nearly full; retry later",
                detail={"free": free, "floor": self.min_free_bytes},
                headers={"Retry-After": STAGING_FULL_RETRY_AFTER},
            )

    def _check_size(self, size: int) -> None:
        if size > self.max_blob_bytes:
            raise BlobTooLarge("blob exceeds the size limit", detail={"limit": self.max_blob_bytes})
