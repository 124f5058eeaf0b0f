"""Writing a request body to a session's staged file, and hashing it as it goes (never held whole in memory)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import anyio

from app.metrics import RECEIVED_BYTES
from app.registry.parts import StagedParts
from app.registry.references import ALGORITHMS

WRITE_BATCH = 1024 * 1024
IOV_MAX = 1024
HASH_READ = 4 * 1024 * 1024


class RunningHash:
    """sha256 of the first `size` bytes of an upload's data file."""

    def __init__(self) -> None:
        self.hasher = hashlib.sha256()
        self.size = 0


class BatchWriter:
    """Appends a body to the staged file in a worker thread while the event loop receives the next batch.

    At most two batches are held (one being written and hashed, one being received), and the bytes are never
    copied: a batch is the list of chunks as they came, written with `writev` and hashed chunk by chunk. After
    each batch is on disk, the parts it completed are handed to the overlapped multipart upload.
    """

    def __init__(
        self, pool: ThreadPoolExecutor, data: Path, running: RunningHash | None, size: int, parts: StagedParts | None
    ) -> None:
        self.pool = pool
        self.fd = os.open(data, os.O_WRONLY | os.O_APPEND)
        self.running = running
        self.size = size  # on disk once the batch in flight is written
        self.parts = parts
        self.batch: list[bytes] = []
        self.batch_bytes = 0
        self.inflight: Future[int] | None = None

    async def add(self, chunk: bytes) -> None:
        self.batch.append(chunk)
        self.batch_bytes += len(chunk)
        if self.batch_bytes >= WRITE_BATCH:
            await self._hand_over()

    async def finish(self) -> int:
        """Write what is left; returns the file's new size."""
        await self._hand_over()
        await self._drain()
        os.close(self.fd)
        return self.size

    async def abandon(self) -> None:
        """After a failure: wait for the thread still writing (it owns the descriptor), then close."""
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            await self._drain()
        with contextlib.suppress(OSError):
            os.close(self.fd)

    async def _hand_over(self) -> None:
        await self._drain()
        if self.batch:
            batch, self.batch, self.batch_bytes = self.batch, [], 0
            self.inflight = self.pool.submit(_write_and_hash, self.fd, self.running, batch)

    async def _drain(self) -> None:
        if self.inflight is None:
            return
        future, self.inflight = self.inflight, None
        written = await asyncio.wrap_future(future)
        self.size += written
        RECEIVED_BYTES.inc(written)
        if self.parts is not None:
            self.parts.advance(self.size)


def _write_and_hash(fd: int, running: RunningHash | None, chunks: list[bytes]) -> int:
    """Write every chunk (one `writev` per IOV_MAX chunks, resuming after short writes), then hash them."""
    views = [memoryview(chunk) for chunk in chunks]
    total = sum(len(view) for view in views)
    while views:
        written = os.writev(fd, views[:IOV_MAX])
        while views and written >= len(views[0]):
            written -= len(views.pop(0))
        if written:
            views[0] = views[0][written:]
    if running is not None:
        for chunk in chunks:
            running.hasher.update(chunk)
        running.size += total
    return total


def hash_file(path: Path, algorithm: str, length: int) -> str:
    """The digest of exactly the first `length` bytes of `path` (what will be published, nothing after it)."""
    hasher = ALGORITHMS[algorithm]()
    remaining = length
    with open(path, "rb") as handle:
        while remaining > 0 and (chunk := handle.read(min(HASH_READ, remaining))):
            hasher.update(chunk)
            remaining -= len(chunk)
    if remaining:
        raise FileNotFoundError(f"{path} is shorter than the {length} bytes verified")
    return f"{algorithm}:{hasher.hexdigest()}"
