"""Blob upload sessions, staged on local disk.

Each session is a directory `<staging>/<id>/` holding `data` (the bytes received so far) and `state.json`
(the repository it belongs to). The file's size is the truth about progress, so a session survives a restart
of the service: the running sha256 kept in memory is only a shortcut, rebuilt from the file when missing or
stale (after a restart, or when another replica appended to a shared staging volume).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread

from app.errors import BlobUploadUnknown, DigestInvalid, RangeInvalid, SizeInvalid
from app.metrics import ACTIVE_UPLOADS, RECEIVED_BYTES
from app.registry.references import ALGORITHMS, algorithm_of

UPLOAD_ID_RE = re.compile(r"[0-9a-f]{32}")
WRITE_BATCH = 1024 * 1024
HASH_READ = 4 * 1024 * 1024


@dataclass(frozen=True)
class Upload:
    id: str
    name: str
    directory: Path

    @property
    def data(self) -> Path:
        return self.directory / "data"


class _RunningHash:
    """sha256 of the first `size` bytes of an upload's data file."""

    def __init__(self) -> None:
        self.hasher = hashlib.sha256()
        self.size = 0


class Uploads:
    def __init__(self, staging_dir: Path) -> None:
        self.root = staging_dir.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._hashes: dict[str, _RunningHash] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    # sessions -----------------------------------------------------------------------------------------

    def create(self, name: str) -> Upload:
        upload_id = uuid.uuid4().hex
        upload = Upload(upload_id, name, self.root / upload_id)
        upload.directory.mkdir()
        upload.data.touch()
        (upload.directory / "state.json").write_text(json.dumps({"name": name, "created": time.time()}))
        self._hashes[upload.id] = _RunningHash()
        return upload

    def get(self, name: str, upload_id: str) -> Upload:
        """The session `upload_id` of repository `name`; unknown ids and other repositories' sessions are 404."""
        if not UPLOAD_ID_RE.fullmatch(upload_id):
            raise BlobUploadUnknown("unknown upload", detail={"uuid": upload_id[:100]})
        directory = self.root / upload_id
        try:
            state = json.loads((directory / "state.json").read_text())
        except (FileNotFoundError, NotADirectoryError, ValueError):
            raise BlobUploadUnknown("unknown upload", detail={"uuid": upload_id}) from None
        if state.get("name") != name:
            raise BlobUploadUnknown("upload belongs to another repository", detail={"uuid": upload_id})
        return Upload(upload_id, name, directory)

    def size(self, upload: Upload) -> int:
        try:
            return upload.data.stat().st_size
        except FileNotFoundError:
            raise BlobUploadUnknown("upload was cancelled or completed", detail={"uuid": upload.id}) from None

    def lock(self, upload: Upload) -> asyncio.Lock:
        return self._locks.setdefault(upload.id, asyncio.Lock())

    def discard(self, upload: Upload) -> None:
        self._hashes.pop(upload.id, None)
        self._locks.pop(upload.id, None)
        shutil.rmtree(upload.directory, ignore_errors=True)

    def purge_older_than(self, max_age_seconds: float) -> int:
        """Remove sessions untouched for `max_age_seconds`; returns how many went."""
        cutoff = time.time() - max_age_seconds
        removed = 0
        for directory in self.root.iterdir():
            if not UPLOAD_ID_RE.fullmatch(directory.name):
                continue
            try:
                touched = max(directory.stat().st_mtime, (directory / "data").stat().st_mtime)
            except FileNotFoundError:
                touched = 0
            lock = self._locks.get(directory.name)
            if touched < cutoff and not (lock and lock.locked()):  # a locked session is being committed
                self._hashes.pop(directory.name, None)
                self._locks.pop(directory.name, None)
                shutil.rmtree(directory, ignore_errors=True)
                removed += 1
        return removed

    # data ---------------------------------------------------------------------------------------------

    async def append(
        self, upload: Upload, body: AsyncIterator[bytes], start: int | None = None, length: int | None = None
    ) -> int:
        """Append a request body to the session; returns the new size.

        `start` (from Content-Range) must equal the current size, so out-of-order and repeated chunks are
        refused with 416 before anything is written. `length` (Content-Length) must match what arrives.
        """
        current = self.size(upload)
        if start is not None and start != current:
            raise RangeInvalid("chunk does not continue the upload", detail={"size": current, "start": start})
        running = self._hash_at(upload.id, current)
        written = 0
        received = RECEIVED_BYTES.labels(upload.name)
        try:
            with ACTIVE_UPLOADS.track_inprogress(), open(upload.data, "ab") as handle:
                batch = bytearray()
                async for chunk in body:
                    batch += chunk
                    if len(batch) >= WRITE_BATCH:
                        await anyio.to_thread.run_sync(_write_and_hash, handle, running, bytes(batch))
                        written += len(batch)
                        received.inc(len(batch))
                        batch.clear()
                if batch:
                    await anyio.to_thread.run_sync(_write_and_hash, handle, running, bytes(batch))
                    written += len(batch)
                    received.inc(len(batch))
        except BaseException:
            self._hashes.pop(upload.id, None)
            raise
        if length is not None and written != length:
            self._truncate(upload, current)
            raise SizeInvalid("body length does not match Content-Length or Content-Range")
        return current + written

    def _hash_at(self, upload_id: str, size: int) -> _RunningHash | None:
        """The running hash if it covers exactly `size` bytes; otherwise None (verify will re-read the file)."""
        running = self._hashes.get(upload_id)
        if running is not None and running.size == size:
            return running
        self._hashes.pop(upload_id, None)
        if size == 0:
            running = self._hashes[upload_id] = _RunningHash()
            return running
        return None

    def _truncate(self, upload: Upload, size: int) -> None:
        self._hashes.pop(upload.id, None)
        os.truncate(upload.data, size)

    async def staged_digest(self, upload: Upload, algorithm: str) -> str:
        """Digest of the bytes staged so far: the running sha256 when it covers them all, else a re-read."""
        running = self._hashes.get(upload.id)
        if algorithm == "sha256" and running is not None and running.size == self.size(upload):
            return "sha256:" + running.hasher.hexdigest()
        return await anyio.to_thread.run_sync(_hash_file, upload.data, algorithm)

    async def verify(self, upload: Upload, digest: str) -> int:
        """Check the staged bytes against `digest`; on mismatch the session is discarded (400)."""
        size = self.size(upload)
        if await self.staged_digest(upload, algorithm_of(digest)) != digest:
            self.discard(upload)
            raise DigestInvalid("digest does not match the uploaded content", detail={"digest": digest})
        return size


def _write_and_hash(handle, running: _RunningHash | None, data: bytes) -> None:
    handle.write(data)
    if running is not None:
        running.hasher.update(data)
        running.size += len(data)


def _hash_file(path: Path, algorithm: str) -> str:
    hasher = ALGORITHMS[algorithm]()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_READ):
            hasher.update(chunk)
    return f"{algorithm}:{hasher.hexdigest()}"
