"""Location records, for automatic layer sharing: which repository holds a blob, so that a HEAD miss copies it
from there instead of the client uploading it again.

Committing a blob of at least `share_min_bytes` writes a small record `v2/_blobs/<digest>` naming its repository,
after the client has its answer (off the push's critical path). Smaller blobs get no record: across a WAN,
uploading them again costs about what writing the record and reading it back would.

A HEAD miss must not cost a request per blob either, so which records exist is a belief (app/registry/beliefs.py):
one listing of `v2/_blobs/` (a thousand records a request), taken at start and again in the background when it
is older than its window and a miss happens, plus the records this process wrote. A record is only a hint: the
copy fails harmlessly when the source has lost the blob (a miss: the client uploads, and the record is rewritten).
"""

from __future__ import annotations

import asyncio
import logging
import time

from anyio.to_thread import run_sync as run

from app import layout
from app.registry.beliefs import Beliefs
from app.registry.references import DIGEST_RE, is_name
from app.storage import Storage, StorageFault

log = logging.getLogger("storj_registry")


class LocationRecords:
    def __init__(self, storage: Storage, beliefs: Beliefs, min_bytes: int) -> None:
        self.storage = storage
        self.beliefs = beliefs
        self.min_bytes = min_bytes
        self._loading: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Task[None]] = set()

    def exists(self, digest: str) -> bool:
        """Is there (as far as memory tells) a record for `digest`? Refreshes the listing behind when it is stale."""
        if self.beliefs.records_stale():
            self.refresh_soon()
        return self.beliefs.record_may_exist(digest)

    async def holder(self, digest: str) -> str | None:
        """The repository the record names (one read), or None when there is no usable record."""
        found = await run(self.storage.read_small, layout.blob_location(digest))
        if found is None:
            self.beliefs.record_missing(digest)
            return None
        source = found[0].decode("utf-8", "replace")
        return source if is_name(source) else None

    def remember(self, name: str, digest: str, size: int) -> None:
        """Write the record of a blob just committed to `name`, in the background (best effort)."""
        if size < self.min_bytes:
            return
        self.beliefs.wrote_record(digest)
        task = asyncio.create_task(self._write(name, digest))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, name: str, digest: str) -> None:
        key = layout.blob_location(digest)
        try:
            await run(self.storage.put_bytes, key, name.encode(), layout.TEXT, layout.MUTABLE_CACHE)
        except StorageFault as exc:  # the blob is committed; a missing record only costs a later upload
            log.warning("could not record the location of %s: %s", digest, exc)

    async def load(self) -> None:
        """List every record (at start, then in the background when stale)."""
        started = time.time()
        try:
            keys = await run(lambda: list(self.storage.list_children(layout.BLOB_LOCATIONS)))
        except StorageFault as exc:
            log.warning("could not list the blob location records: %s", exc)
            return
        self.beliefs.learn_records({key for key in keys if DIGEST_RE.fullmatch(key)}, started)

    def refresh_soon(self) -> None:
        if self._loading is None or self._loading.done():
            self._loading = asyncio.create_task(self.load())

    async def settle(self) -> None:
        """Wait for the record writes in flight (shutdown, tests)."""
        pending = [*self._writes, *([self._loading] if self._loading else [])]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
