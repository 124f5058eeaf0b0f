"""Blob upload sessions: one state machine, owned here, every transition under the session's own lock.

    open ──receive──▶ open ──seal──▶ verified ──publish──▶ published (the session is gone, the blob in the bucket)
      └──────────── cancel, digest mismatch, body refused, purge ──────────▶ discarded

- **open**: bytes are appended (`receive`), in order; a chunk that does not continue the upload is refused (416).
- **seal**: the length received so far is fixed, the first that many bytes are hashed and compared with the
  digest; a match records the digest and length (`verified`, before the client's 201), a mismatch discards the
  session (400). Nothing is ever appended to a sealed session.
- **publish**: exactly the verified length goes to the bucket (create-only), then the session is removed.

The lock of a session is this process's asyncio lock, then a flock that processes sharing the staging disk
honour (app/registry/staging.py states the disk's layout and cross-replica rules). Routes never take it: they
call one method per request, and the method takes the lock for the whole transition.

The running sha256 kept in memory is only a shortcut, used when it covers exactly the bytes being sealed. With
an S3 backend, full 64 MiB parts go to the bucket while the client is still uploading (app/registry/parts.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import logging
import os
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread

from app import layout
from app.errors import BlobUploadUnknown, DigestInvalid, RangeInvalid, SizeInvalid
from app.metrics import ACTIVE_UPLOADS
from app.registry.appending import BatchWriter, RunningHash, hash_file
from app.registry.limits import BodyRefused, StagingLimits
from app.registry.parts import PartSender, StagedParts
from app.registry.references import algorithm_of
from app.registry.staging import LOCK, Sealed, Staging, Upload

__all__ = ["Body", "Sealed", "StagedSession", "Upload", "Uploads"]

log = logging.getLogger("storj_registry")

WANTED_TTL_S = 600.0
MAX_WANTED = 4096


@dataclass
class Body:
    """A request body on its way to a session: the chunks, and what the client declared about them."""

    chunks: AsyncIterator[bytes]
    start: int | None = None  # Content-Range start: must equal the session's size
    length: int | None = None  # Content-Length (or the Content-Range span): must match what arrives
    present: bool = True  # False: the request has no body at all


@dataclass(frozen=True)
class StagedSession:
    """An upload session as found on the staging disk, for listing and purging."""

    id: str
    name: str
    size: int
    touched: float  # last write to it, seconds since the epoch (0 when its data file is gone)


class _Wanted:
    """Digests that clients just asked for and did not find, per repository: the likely next uploads.

    docker, skopeo and podman HEAD a blob right before uploading it. The digest names the key the upload will end
    under, which lets its multipart upload start there (see app/registry/parts.py). Bounded, and forgotten after
    WANTED_TTL_S: a guess about clients, not a belief about the bucket; a wrong one costs speed only.
    """

    def __init__(self) -> None:
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()

    def add(self, name: str, digest: str) -> None:
        self._seen.pop((name, digest), None)
        self._seen[(name, digest)] = time.monotonic()
        while len(self._seen) > MAX_WANTED:
            self._seen.popitem(last=False)

    def drop(self, name: str, digest: str) -> None:
        self._seen.pop((name, digest), None)

    def claim(self, name: str) -> str | None:
        """The repository's one recent wanted digest, taken out; None when there are none or several."""
        cutoff = time.monotonic() - WANTED_TTL_S
        fresh = [digest for (repo, digest), seen in list(self._seen.items()) if repo == name and seen >= cutoff]
        if len(fresh) != 1:
            return None
        self._seen.pop((name, fresh[0]), None)
        return fresh[0]


Write = Callable[[Upload, Sealed], Awaitable[None]]


class Uploads:
    def __init__(
        self,
        staging_dir: Path,
        sender: PartSender | None = None,
        *,
        create: bool = True,
        limits: StagingLimits | None = None,
        id_prefix: str = "",
    ) -> None:
        self.staging = Staging(staging_dir, create=create)
        self.id_prefix = id_prefix  # the replica holding a session, first in its id (app/cluster/members.py)
        self.root = self.staging.root
        self.sender = sender
        self.limits = limits
        self._hashes: dict[str, RunningHash] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._parts: dict[str, StagedParts] = {}
        self._wanted = _Wanted()
        self._writer = ThreadPoolExecutor(max_workers=8, thread_name_prefix="staging")

    # finding sessions -----------------------------------------------------------------------------------

    def create(self, name: str) -> Upload:
        upload = self.staging.create(self.id_prefix + uuid.uuid4().hex[len(self.id_prefix) :], name)
        self._hashes[upload.id] = RunningHash()
        return upload

    def get(self, name: str, upload_id: str) -> Upload:
        """The open session `upload_id` of repository `name`; unknown ids, other repositories' sessions and
        verified ones are 404 (checked again under the lock by every transition)."""
        upload = self.find(name, upload_id)
        if self.staging.sealed(upload) is not None:
            raise BlobUploadUnknown("upload already completed", detail={"uuid": upload_id})
        return upload

    def find(self, name: str, upload_id: str) -> Upload:
        """The session `upload_id` of repository `name`, whatever its state; 404 when there is none."""
        owner = self.staging.owner(upload_id)
        if owner is None:
            raise BlobUploadUnknown("unknown upload", detail={"uuid": upload_id[:100]})
        if owner != name:
            raise BlobUploadUnknown("upload belongs to another repository", detail={"uuid": upload_id})
        return self.staging.session(upload_id, name)

    def size(self, upload: Upload) -> int:
        try:
            return upload.data.stat().st_size
        except FileNotFoundError:
            raise BlobUploadUnknown("upload was cancelled or completed", detail={"uuid": upload.id}) from None

    def check_free(self) -> None:
        """Refuse (507) a new session while the staging disk is below its free-space floor."""
        if self.limits is not None:
            self.limits.check_free()

    def busy(self, upload: Upload) -> bool:
        """Is a request of this process working on the session right now?"""
        lock = self._locks.get(upload.id)
        return lock is not None and lock.locked()

    @contextlib.asynccontextmanager
    async def _transition(self, upload: Upload) -> AsyncIterator[None]:
        """The session's lock: this process's, then the one processes sharing the staging disk honour."""
        async with self._locks.setdefault(upload.id, asyncio.Lock()), self.staging.session_lock(upload):
            yield

    def _require_open(self, upload: Upload) -> None:
        """Under the lock: the session is still there and takes bytes (not verified, not discarded)."""
        if not upload.directory.is_dir():
            raise BlobUploadUnknown("upload was cancelled or completed", detail={"uuid": upload.id})
        if self.staging.sealed(upload) is not None:
            raise BlobUploadUnknown("upload already completed", detail={"uuid": upload.id})

    # open: receiving --------------------------------------------------------------------------------------

    async def receive(self, upload: Upload, body: Body) -> int:
        """Append a request body to the open session; returns its new size.

        `body.start` (from Content-Range) must equal the current size, so out-of-order and repeated chunks are
        refused with 416 before anything is written; `body.length` must match what arrives. A body the staging
        limits refuse (too large, disk full, stalled) discards the session: it could never finish.
        """
        async with self._transition(upload):
            self._require_open(upload)
            return await self._append(upload, body)

    async def _append(self, upload: Upload, body: Body) -> int:
        current = self.size(upload)
        if body.start is not None and body.start != current:
            raise RangeInvalid("chunk does not continue the upload", detail={"size": current, "start": body.start})
        try:
            chunks = self.limits.watch(body.chunks, current, body.length) if self.limits else body.chunks
        except BodyRefused:  # declared too large, or no room on the disk: the session could never finish
            await self._discard(upload)
            raise
        parts = self.parts_of(upload)
        writer = BatchWriter(self._writer, upload.data, self._hash_at(upload.id, current), current, parts)
        try:
            with ACTIVE_UPLOADS.track_inprogress():
                async for chunk in chunks:
                    await writer.add(chunk)
                size = await writer.finish()
        except BodyRefused:
            self._hashes.pop(upload.id, None)
            await writer.abandon()
            await self._discard(upload)
            raise
        except BaseException:
            self._hashes.pop(upload.id, None)
            await writer.abandon()
            raise
        if body.length is not None and size - current != body.length:
            await self._truncate(upload, current)
            raise SizeInvalid("body length does not match Content-Length or Content-Range")
        if parts is not None:  # answer once the full parts are in the bucket, so any replica can finish
            await anyio.to_thread.run_sync(parts.settle)
        return size

    def _hash_at(self, upload_id: str, size: int) -> RunningHash | None:
        """The running hash if it covers exactly `size` bytes; otherwise None (sealing will re-read the file)."""
        running = self._hashes.get(upload_id)
        if running is not None and running.size == size:
            return running
        self._hashes.pop(upload_id, None)
        if size == 0:
            running = self._hashes[upload_id] = RunningHash()
            return running
        return None

    async def _truncate(self, upload: Upload, size: int) -> None:
        self._hashes.pop(upload.id, None)
        parts = self.parts_of(upload)
        if parts is not None:
            await anyio.to_thread.run_sync(parts.truncated, size)
        os.truncate(upload.data, size)

    # open → verified ----------------------------------------------------------------------------------------

    async def finish(self, name: str, upload_id: str, digest: str, body: Body) -> tuple[Upload, Sealed]:
        """The final PUT: append its body, seal the session and verify it as `digest` (one transition).

        A session already verified as `digest` answers again (the retry of a final PUT whose answer was lost).
        A body that is the retry of one whose commit failed (the staged bytes already hash to the digest) is not
        appended again: appended to matching bytes, no body could ever match.
        """
        upload = self.find(name, upload_id)
        async with self._transition(upload):
            sealed = self.staging.sealed(upload)
            if sealed is not None and sealed.digest == digest:
                return upload, sealed
            self._require_open(upload)
            if body.present and not await self._staged_bytes_are(upload, digest):
                await self._append(upload, body)
            return upload, await self._seal(upload, digest)

    async def seal(self, upload: Upload, digest: str) -> Sealed:
        """Seal and verify a session whose bytes are all staged (`copy`, `sync`)."""
        async with self._transition(upload):
            self._require_open(upload)
            return await self._seal(upload, digest)

    async def _seal(self, upload: Upload, digest: str) -> Sealed:
        size = self.size(upload)
        if await self._digest_of(upload, algorithm_of(digest), size) != digest:
            await self._discard(upload)
            raise DigestInvalid("digest does not match the uploaded content", detail={"digest": digest})
        sealed = Sealed(digest, size)
        await anyio.to_thread.run_sync(self.staging.seal, upload, sealed)
        self._hashes.pop(upload.id, None)
        self._wanted.drop(upload.name, digest)
        return sealed

    async def _staged_bytes_are(self, upload: Upload, digest: str) -> bool:
        size = self.size(upload)
        return size > 0 and await self._digest_of(upload, algorithm_of(digest), size) == digest

    async def _digest_of(self, upload: Upload, algorithm: str, size: int) -> str:
        """Digest of the first `size` staged bytes: the running sha256 when it covers exactly them, else a read."""
        running = self._hashes.get(upload.id)
        if algorithm == "sha256" and running is not None and running.size == size:
            return "sha256:" + running.hasher.hexdigest()
        return await anyio.to_thread.run_sync(hash_file, upload.data, algorithm, size)

    # verified → published -----------------------------------------------------------------------------------

    async def publish(self, upload: Upload, write: Write, *, reopen_on_failure: bool = False) -> Sealed | None:
        """Put a verified session in the bucket with `write`, then retire it (its bytes go, a receipt stays for a
        while); a session published already is not written again. None when the session is gone (expired, or
        it was never verified).

        `reopen_on_failure`: the client has no answer yet (publishing before answering), so a write that fails
        reopens the session as it was before its final PUT, and the client's retry (or cancel) finds it so.
        """
        async with self._transition(upload):
            sealed = self.staging.sealed(upload) if upload.directory.is_dir() else None
            if sealed is None or self.staging.published(upload):
                return sealed
            try:
                await write(upload, sealed)
            except BaseException:
                if reopen_on_failure:
                    await anyio.to_thread.run_sync(self.staging.unseal, upload, sealed)
                raise
            await anyio.to_thread.run_sync(self.staging.mark_published, upload.name, sealed.digest, sealed.size)
            parts = self.parts_of(upload)
            self._forget(upload.id)
            if parts is not None:
                await anyio.to_thread.run_sync(parts.forget)  # nothing left once completed; aborts a wrong guess
            await anyio.to_thread.run_sync(self.staging.retire, upload)
            return sealed

    def find_verified(self, name: str, digest: str) -> tuple[Upload, int] | None:
        return self.staging.find_verified(name, digest)

    def verified_sessions(self) -> list[tuple[Upload, Sealed]]:
        return self.staging.every_verified()

    def recently_published(self, name: str, digest: str) -> int | None:
        return self.staging.recently_published(name, digest)

    def forget_published(self, name: str, digest: str) -> None:
        self.staging.forget_published(name, digest)

    async def write_parts(self, upload: Upload, key: str, size: int) -> bool:
        """Complete the verified upload's multipart upload under `key`; False when the file must be sent whole."""
        parts = self.parts_of(upload)
        return parts is not None and await anyio.to_thread.run_sync(parts.publish, size, key)

    # → discarded ---------------------------------------------------------------------------------------------

    async def cancel(self, upload: Upload) -> None:
        """The client's DELETE of an open session (a final PUT verifying it finishes first, and wins)."""
        async with self._transition(upload):
            self._require_open(upload)
            await self._discard(upload)

    async def discard(self, upload: Upload) -> None:
        """Drop a session whatever its state (its client never learnt its id, or the copy that made it failed)."""
        async with self._transition(upload):
            await self._discard(upload)

    async def _discard(self, upload: Upload) -> None:
        """Remove the session (under its lock); its multipart upload, if any, is aborted first."""
        parts = self.parts_of(upload)
        if parts is not None:
            await anyio.to_thread.run_sync(parts.forget)
        self._forget(upload.id)
        await anyio.to_thread.run_sync(self.staging.remove, upload)

    def _forget(self, upload_id: str) -> None:
        self._parts.pop(upload_id, None)
        self._hashes.pop(upload_id, None)
        self._locks.pop(upload_id, None)

    # the purge of abandoned sessions (blocking: a worker thread, or the `uploads` command) --------------------

    def sessions(self) -> list[StagedSession]:
        """Every session on the staging disk, oldest first (what `storj-registry uploads list` shows)."""
        found = [self._describe(self.root / upload_id) for upload_id in self.staging.session_ids()]
        return sorted(found, key=lambda session: session.touched)

    def stale_sessions(self, max_age_seconds: float) -> list[StagedSession]:
        """Open sessions untouched for `max_age_seconds`: abandoned, since an active push writes every chunk.
        Verified sessions are not abandoned (their clients have a 201): they are published, not purged."""
        cutoff = time.time() - max_age_seconds
        stale = [session for session in self.sessions() if session.touched < cutoff]
        return [session for session in stale if not (self.root / session.id / "verified").exists()]

    def purge_older_than(self, max_age_seconds: float) -> int:
        """Remove sessions untouched for `max_age_seconds`; returns how many went."""
        self.staging.expire_published()
        return sum(self.purge(session) for session in self.stale_sessions(max_age_seconds))

    def purge(self, session: StagedSession) -> bool:
        """Remove an abandoned session, its multipart upload aborted first; False when kept (in use, store down)."""
        if self.busy(self.staging.session(session.id, session.name)):
            return False
        directory = self.root / session.id
        with _try_flock(directory / LOCK) as held:
            if not held or (directory / "verified").exists():
                return False
            if not self._abandon_parts(directory):
                return False
            self._forget(session.id)
            self.staging.remove(self.staging.session(session.id, session.name))
        return True

    def _describe(self, directory: Path) -> StagedSession:
        """What a session directory holds; a half-written or damaged one still gets listed (and can be purged)."""
        name = self.staging.owner(directory.name) or "?"
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

    # the overlapped multipart upload, and the guess of its key ------------------------------------------------

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


@contextlib.contextmanager
def _try_flock(path: Path):
    """The session's cross-process lock if nobody holds it now (the purge never waits for a busy session)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:  # a session from before locks, or being removed: nobody can be holding it
        yield True
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        yield True
    finally:
        os.close(fd)
