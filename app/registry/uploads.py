"""Blob upload sessions, staged on local disk.

Each session is a directory `<staging>/<id>/` holding `data` (the bytes received so far) and `state.json`
(the repository it belongs to). The file's size is the truth about progress, so a session survives a restart
of the service: the running sha256 kept in memory is only a shortcut, rebuilt from the file when missing or
stale (after a restart, or when another replica appended to a shared staging volume).

With an S3 backend, full 64 MiB parts are sent to the bucket while the client is still uploading
(`app.registry.parts`); `parts.json` in the session directory records them for any replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread

from app import layout
from app.errors import BlobUploadUnknown, DigestInvalid, RangeInvalid, SizeInvalid
from app.metrics import ACTIVE_UPLOADS, RECEIVED_BYTES
from app.registry.parts import PartSender, StagedParts
from app.registry.references import ALGORITHMS, algorithm_of

log = logging.getLogger("storj_registry")

UPLOAD_ID_RE = re.compile(r"[0-9a-f]{32}")
VERIFIED = "verified"  # in a session directory: the digest its bytes were verified as
MARKER_ATTEMPTS = 3
VERIFIED_MARKERS = "verified"  # <staging>/verified/<digest>/<upload id>: {"name", "size"} of verified sessions
WRITE_BATCH = 1024 * 1024
IOV_MAX = 1024
HASH_READ = 4 * 1024 * 1024
WANTED_TTL_S = 600.0
MAX_WANTED = 4096


@dataclass(frozen=True)
class Upload:
    id: str
    name: str
    directory: Path

    @property
    def data(self) -> Path:
        return self.directory / "data"


@dataclass(frozen=True)
class StagedSession:
    """An upload session as found on the staging disk, for listing and purging."""

    id: str
    name: str
    size: int
    touched: float  # last write to it, seconds since the epoch (0 when its data file is gone)


class _RunningHash:
    """sha256 of the first `size` bytes of an upload's data file."""

    def __init__(self) -> None:
        self.hasher = hashlib.sha256()
        self.size = 0


class _Wanted:
    """Digests that clients just asked for and did not find, per repository: the likely next uploads.

    docker, skopeo and podman HEAD a blob right before uploading it. The digest names the key the upload will end
    under, which lets its multipart upload start there (see app/registry/parts.py). Bounded, and forgotten after
    WANTED_TTL_S: it is a guess, a wrong one costs speed only.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()

    def add(self, name: str, digest: str) -> None:
        with self._lock:
            self._seen.pop((name, digest), None)
            self._seen[(name, digest)] = time.monotonic()
            while len(self._seen) > MAX_WANTED:
                self._seen.popitem(last=False)

    def drop(self, name: str, digest: str) -> None:
        with self._lock:
            self._seen.pop((name, digest), None)

    def claim(self, name: str) -> str | None:
        """The repository's one recent wanted digest, taken out; None when there are none or several."""
        cutoff = time.monotonic() - WANTED_TTL_S
        with self._lock:
            fresh = [digest for (repo, digest), seen in self._seen.items() if repo == name and seen >= cutoff]
            if len(fresh) != 1:
                return None
            del self._seen[(name, fresh[0])]
            return fresh[0]


class Uploads:
    def __init__(self, staging_dir: Path, sender: PartSender | None = None, *, create: bool = True) -> None:
        self.root = staging_dir.resolve()
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        self.sender = sender
        self._hashes: dict[str, _RunningHash] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._parts: dict[str, StagedParts] = {}
        self._wanted = _Wanted()
        self._writer = ThreadPoolExecutor(max_workers=8, thread_name_prefix="staging")

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
        if (directory / VERIFIED).exists():
            raise BlobUploadUnknown("upload already completed", detail={"uuid": upload_id})
        return Upload(upload_id, name, directory)

    def size(self, upload: Upload) -> int:
        try:
            return upload.data.stat().st_size
        except FileNotFoundError:
            raise BlobUploadUnknown("upload was cancelled or completed", detail={"uuid": upload.id}) from None

    def lock(self, upload: Upload) -> asyncio.Lock:
        return self._locks.setdefault(upload.id, asyncio.Lock())

    async def cancel(self, upload: Upload) -> None:
        """The client's DELETE: once any request on the session is done (a final PUT may be verifying it).

        Without the lock, a DELETE during the final PUT's digest check would pull the file from under the
        commit; with it, the DELETE after a commit finds the session gone (404) and the PUT's 201 stands.
        """
        async with self.lock(upload):
            self.size(upload)
            await self.discard(upload)

    async def discard(self, upload: Upload) -> None:
        """Remove the session; its multipart upload, if any, is aborted first so that no parts dangle."""
        parts = self.parts_of(upload)
        if parts is not None:
            await anyio.to_thread.run_sync(parts.forget)
        self._parts.pop(upload.id, None)
        self._hashes.pop(upload.id, None)
        self._locks.pop(upload.id, None)
        self._remove(upload.directory)

    def parts_of(self, upload: Upload) -> StagedParts | None:
        """The session's overlapped multipart upload (None without an S3 backend)."""
        if self.sender is None:
            return None
        parts = self._parts.get(upload.id)
        if parts is None:
            guess = functools.partial(self._guess_key, upload.name)
            parts = self._parts[upload.id] = self.sender.session(upload.directory, upload.id, guess)
        return parts

    def wanted(self, name: str, digest: str) -> None:
        """A client asked for blob `digest` of `name` and it was missing: it may be uploaded next."""
        self._wanted.add(name, digest)

    def _guess_key(self, name: str) -> str | None:
        digest = self._wanted.claim(name)
        return layout.blob(name, digest) if digest else None

    async def publish(self, upload: Upload, key: str, size: int) -> bool:
        """Complete the verified upload's multipart upload under `key`; False when the file must be sent whole."""
        parts = self.parts_of(upload)
        return parts is not None and await anyio.to_thread.run_sync(parts.publish, size, key)

    def sessions(self) -> list[StagedSession]:
        """Every session on the staging disk, oldest first (what `storj-registry uploads list` shows)."""
        if not self.root.is_dir():
            return []
        found = [self._describe(d) for d in self.root.iterdir() if UPLOAD_ID_RE.fullmatch(d.name)]
        return sorted(found, key=lambda session: session.touched)

    def stale_sessions(self, max_age_seconds: float) -> list[StagedSession]:
        """Sessions untouched for `max_age_seconds`: abandoned, since an active push writes at least every chunk."""
        cutoff = time.time() - max_age_seconds
        return [session for session in self.sessions() if session.touched < cutoff]

    def purge_older_than(self, max_age_seconds: float) -> int:
        """Remove sessions untouched for `max_age_seconds`; returns how many went."""
        return sum(self.purge(session) for session in self.stale_sessions(max_age_seconds))

    def purge(self, session: StagedSession) -> bool:
        """Remove an abandoned session, its multipart upload aborted first; False when kept (in use, store down)."""
        lock = self._locks.get(session.id)
        if lock and lock.locked():  # a locked session is being committed
            return False
        directory = self.root / session.id
        if not self._abandon_parts(directory):
            return False
        self._parts.pop(session.id, None)
        self._hashes.pop(session.id, None)
        self._locks.pop(session.id, None)
        self._remove(directory)
        return True

    def _remove(self, directory: Path) -> None:
        """Delete a session directory, and its verified marker first (so no replica tries to publish it)."""
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            marker = self._marker((directory / VERIFIED).read_text(), directory.name)
            marker.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # empty folders go, so an idle staging disk holds only sessions
                marker.parent.rmdir()
                marker.parent.parent.rmdir()
        shutil.rmtree(directory, ignore_errors=True)

    # verified sessions: acknowledged to the client, on their way to the bucket (app.registry.publishing) ------

    def mark_verified(self, upload: Upload, digest: str, size: int) -> None:
        """Record that the session's bytes are verified as `digest`: it takes no more data, and any replica that
        shares the staging disk can publish it (`find_verified`)."""
        (upload.directory / VERIFIED).write_text(digest)
        marker = self._marker(digest, upload.id)
        for attempt in range(MARKER_ATTEMPTS):
            marker.parent.mkdir(parents=True, exist_ok=True)
            try:
                marker.write_text(json.dumps({"name": upload.name, "size": size}))
                return
            except FileNotFoundError:  # another session's removal took the empty folder just now
                if attempt + 1 == MARKER_ATTEMPTS:
                    raise

    def verified_digest(self, name: str, upload_id: str) -> str | None:
        """The digest a session of `name` was verified as, or None (not verified, unknown, another repository)."""
        if not UPLOAD_ID_RE.fullmatch(upload_id):
            return None
        try:
            digest = (self.root / upload_id / VERIFIED).read_text()
            state = json.loads((self.root / upload_id / "state.json").read_text())
        except (OSError, ValueError):
            return None
        return digest if state.get("name") == name else None

    def find_verified(self, name: str, digest: str) -> tuple[Upload, int] | None:
        """A session of `name` verified as `digest` and not yet published, with its size."""
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            for marker in (self.root / VERIFIED_MARKERS / digest).iterdir():
                try:
                    found = json.loads(marker.read_text())
                except (OSError, ValueError):
                    continue
                upload = Upload(marker.name, name, self.root / marker.name)
                if found.get("name") == name and UPLOAD_ID_RE.fullmatch(marker.name) and upload.data.exists():
                    return upload, int(found["size"])
        return None

    def _marker(self, digest: str, upload_id: str) -> Path:
        return self.root / VERIFIED_MARKERS / digest / upload_id

    def _describe(self, directory: Path) -> StagedSession:
        """What a session directory holds; a half-written or damaged one still gets listed (and can be purged)."""
        try:
            name = str(json.loads((directory / "state.json").read_text()).get("name", "?"))
        except (OSError, ValueError, AttributeError):
            name = "?"
        try:
            data = (directory / "data").stat()
            size, touched = data.st_size, max(directory.stat().st_mtime, data.st_mtime)
        except FileNotFoundError:
            size, touched = 0, 0.0
        return StagedSession(directory.name, name, size, touched)

    def _abandon_parts(self, directory: Path) -> bool:
        """Abort a purged session's multipart upload; False (keep it, retry next time) when the store fails."""
        if self.sender is None:
            return True
        try:
            self.sender.abandon(directory)
        except Exception as exc:  # the store is down: the next purge tries again rather than leak the parts
            log.warning("could not abort the multipart upload of %s: %s", directory.name, exc)
            return False
        return True

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
        parts = self.parts_of(upload)
        writer = _BatchWriter(self._writer, upload, self._hash_at(upload.id, current), current, parts)
        try:
            with ACTIVE_UPLOADS.track_inprogress():
                async for chunk in body:
                    await writer.add(chunk)
                size = await writer.finish()
        except BaseException:
            self._hashes.pop(upload.id, None)
            await writer.abandon()
            raise
        if length is not None and size - current != length:
            await self._truncate(upload, current)
            raise SizeInvalid("body length does not match Content-Length or Content-Range")
        if parts is not None:  # answer once the full parts are in the bucket, so any replica can finish
            await anyio.to_thread.run_sync(parts.settle)
        return size

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

    async def _truncate(self, upload: Upload, size: int) -> None:
        self._hashes.pop(upload.id, None)
        parts = self.parts_of(upload)
        if parts is not None:
            await anyio.to_thread.run_sync(parts.truncated, size)
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
            await self.discard(upload)
            raise DigestInvalid("digest does not match the uploaded content", detail={"digest": digest})
        self._wanted.drop(upload.name, digest)
        return size


class _BatchWriter:
    """Appends a body to the staged file in a worker thread while the event loop receives the next batch.

    At most two batches are held (one being written and hashed, one being received), and the bytes are never
    copied: a batch is the list of chunks as they came, written with `writev` and hashed chunk by chunk. After
    each batch is on disk, the parts it completed are handed to the overlapped multipart upload.
    """

    def __init__(
        self,
        pool: ThreadPoolExecutor,
        upload: Upload,
        running: _RunningHash | None,
        size: int,
        parts: StagedParts | None,
    ) -> None:
        self.pool = pool
        self.fd = os.open(upload.data, os.O_WRONLY | os.O_APPEND)
        self.running = running
        self.size = size  # on disk once the batch in flight is written
        self.parts = parts
        self.received = RECEIVED_BYTES
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
        self.received.inc(written)
        if self.parts is not None:
            self.parts.advance(self.size)


def _write_and_hash(fd: int, running: _RunningHash | None, chunks: list[bytes]) -> int:
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


def _hash_file(path: Path, algorithm: str) -> str:
    hasher = ALGORITHMS[algorithm]()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_READ):
            hasher.update(chunk)
    return f"{algorithm}:{hasher.hexdigest()}"
