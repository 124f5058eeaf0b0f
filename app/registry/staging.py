"""The staging directory's layout and its cross-replica rules: the only module that spells staging paths.

As `app.layout` is for the bucket, this is for the local disk where uploads wait for their digest. Several
processes may share one staging directory (replicas on a ReadWriteMany volume; a restart of this one), so what
a session is lives on the disk, never only in one process's memory:

    <staging>/
      <upload id>/                    one upload session (32 hex digits)
        state.json                    {"name", "created"}: the repository it belongs to, written at creation
        data                          the bytes received, only ever appended to; its size is the progress
        lock                          flock'd by the process changing the session (every state transition)
        verified                      {"digest", "size"}: sealed and verified; publish exactly `size` bytes
        published                     the blob is in the bucket; the session keeps only `state.json`,
                                      `verified` and this receipt for PUBLISHED_TTL_S, so that a retried
                                      final PUT (its answer lost) gets its 201 again
        parts.json                    its overlapped S3 multipart upload (app/registry/parts.py)
      verified/<digest>/<upload id>   {"name", "size"}: a verified session not yet in the bucket (any process
                                      sharing the disk may publish it)
      published/<digest>/<repo key>   {"name", "size", "at"}: a blob this disk's processes put in the bucket in
                                      the last PUBLISHED_TTL_S, which their listings may not show yet
      documents/<key hash>            {"key", "entries", "etag", "at"}: a derived document (`tags/list`, the
                                      catalog) as a process sharing this disk last wrote it
      documents/<key hash>.lock       flock'd by the process writing that document: the processes take turns
      events/                         undelivered events (app/events/spool.py)

Rules every process keeps:
- A session changes state only under its lock: the asyncio lock of this process, then the flock of `lock`,
  which serialises processes sharing the disk and is released by the kernel if the holder dies.
- `verified` is written before the client's 201 and before the `verified/` marker; once it exists nothing more
  is appended, and the bytes published are the first `size` bytes of `data` (even if a writer that did not
  honour the lock appended more).
- A session directory is removed with its markers first, so no process finds a marker for a removed session.
- The `published/` marker is written after the blob is in the bucket and before the session goes, so a
  process sharing the disk never answers "absent" from an older listing for a blob another one just wrote.
- A derived document is written by one process sharing the disk at a time (the flock of its `.lock`), which
  leaves the version it wrote for the next: replicas behind one balancer then write each version once instead
  of meeting each other's (If-Match refusals, a read and a write again). The version left is evidence like a
  marker, never a promise: the next write names it (If-Match), so a stale one costs a refusal, not an entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
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

UPLOAD_ID_RE = re.compile(r"[0-9a-f]{32}")
STATE = "state.json"
DATA = "data"
LOCK = "lock"
VERIFIED = "verified"
PUBLISHED = "published"
VERIFIED_MARKERS = "verified"
PUBLISHED_MARKERS = "published"
DOCUMENTS = "documents"
REMOVING = ".removing-"  # infix of a session directory on its way out (renamed first, then deleted)
PUBLISHED_TTL_S = 90.0  # longer than any listing memory trusts (app/registry/beliefs.py, LISTING_TTL_S)
LOCK_POLL_S = (0.005, 0.1)  # first and longest wait between attempts at a busy flock
MARKER_ATTEMPTS = 3


@dataclass(frozen=True)
class Upload:
    id: str
    name: str
    directory: Path

    @property
    def data(self) -> Path:
        return self.directory / DATA


@dataclass(frozen=True)
class Sealed:
    """A verified session: its digest, and the length of `data` that was verified (all that may be published)."""

    digest: str
    size: int


@dataclass(frozen=True)
class Document:
    """A version of a derived document (`tags/list`, the catalog): its entries, its etag, when it was had (epoch
    s). What a process remembers of one (app/registry/beliefs.py), and what it leaves here for the next."""

    entries: frozenset[str]
    etag: str | None  # with If-Match: the version's ETag
    at: float
    version: int | None = None  # without: its number in the chain (app/registry/documents.py)


class Staging:
    def __init__(self, root: Path, *, create: bool = True) -> None:
        self.root = root.resolve()
        if create:
            self.root.mkdir(parents=True, exist_ok=True)

    # sessions ---------------------------------------------------------------------------------------------

    def session(self, upload_id: str, name: str) -> Upload:
        return Upload(upload_id, name, self.root / upload_id)

    def create(self, upload_id: str, name: str) -> Upload:
        upload = self.session(upload_id, name)
        upload.directory.mkdir()
        upload.data.touch()
        (upload.directory / STATE).write_text(json.dumps({"name": name, "created": time.time()}))
        return upload

    def owner(self, upload_id: str) -> str | None:
        """The repository a session belongs to, or None when there is no such session."""
        if not UPLOAD_ID_RE.fullmatch(upload_id):
            return None
        try:
            state = json.loads((self.root / upload_id / STATE).read_text())
        except (OSError, ValueError):
            return None
        name = state.get("name") if isinstance(state, dict) else None
        return name if isinstance(name, str) else None

    def session_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return [entry.name for entry in os.scandir(self.root) if UPLOAD_ID_RE.fullmatch(entry.name)]

    def sealed(self, upload: Upload) -> Sealed | None:
        """What the session was verified as, or None while it is still open."""
        try:
            text = (upload.directory / VERIFIED).read_text()
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            found = json.loads(text)
            return Sealed(str(found["digest"]), int(found["size"]))
        except (ValueError, KeyError, TypeError):  # written by an older version: the digest alone
            return Sealed(text.strip(), upload.data.stat().st_size)

    def seal(self, upload: Upload, sealed: Sealed) -> None:
        """Record the verified digest and length, then the marker any process sharing the disk looks for."""
        (upload.directory / VERIFIED).write_text(json.dumps({"digest": sealed.digest, "size": sealed.size}))
        marker = self._verified_marker(sealed.digest, upload.id)
        _write_in_fresh_folder(marker, json.dumps({"name": upload.name, "size": sealed.size}))

    def unseal(self, upload: Upload, sealed: Sealed) -> None:
        """Undo `seal` (its publish failed before the client had an answer): the session is open again."""
        self._drop_verified_marker(sealed.digest, upload.id)
        (upload.directory / VERIFIED).unlink(missing_ok=True)

    def published(self, upload: Upload) -> bool:
        return (upload.directory / PUBLISHED).exists()

    def retire(self, upload: Upload) -> None:
        """The session's blob is in the bucket: drop its bytes and markers, keep the receipt for a while."""
        sealed = self.sealed(upload)
        if sealed is not None:
            self._drop_verified_marker(sealed.digest, upload.id)
        (upload.directory / PUBLISHED).touch()
        for leftover in (DATA, "parts.json"):
            (upload.directory / leftover).unlink(missing_ok=True)

    def remove(self, upload: Upload) -> None:
        """Delete a session directory, its verified marker first (so no process tries to publish it)."""
        with contextlib.suppress(FileNotFoundError):  # a published session has no data left to size
            sealed = self.sealed(upload)
            if sealed is not None:
                self._drop_verified_marker(sealed.digest, upload.id)
        self._remove_directory(upload.directory)

    def _remove_directory(self, directory: Path) -> None:
        """Take the session away at once (a rename), then delete it. Deleted in place, a session would be half
        there for a moment: a request of another process that takes its lock then (a new lock file, in the
        directory being emptied) would find it open and its data gone."""
        doomed = directory.with_name(f"{directory.name}{REMOVING}{uuid.uuid4().hex[:8]}")
        try:
            directory.rename(doomed)
        except FileNotFoundError:
            return
        shutil.rmtree(doomed, ignore_errors=True)

    def _drop_verified_marker(self, digest: str, upload_id: str) -> None:
        marker = self._verified_marker(digest, upload_id)
        marker.unlink(missing_ok=True)
        _remove_empty(marker.parent, self.root)

    # verified, not yet published ------------------------------------------------------------------------

    def find_verified(self, name: str, digest: str) -> tuple[Upload, int] | None:
        """A session of `name` verified as `digest` and not yet published, with its size."""
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            for marker in (self.root / VERIFIED_MARKERS / digest).iterdir():
                found = _read_json(marker)
                if found is None or not UPLOAD_ID_RE.fullmatch(marker.name) or found.get("name") != name:
                    continue
                upload = self.session(marker.name, name)
                if upload.data.exists():
                    return upload, int(found["size"])
        return None

    def every_verified(self) -> list[tuple[Upload, Sealed]]:
        """Every verified session on the disk (published at start: its client has its 201)."""
        found = []
        for upload_id in self.session_ids():
            name = self.owner(upload_id)
            if name is None:
                continue
            upload = self.session(upload_id, name)
            with contextlib.suppress(FileNotFoundError):  # published meanwhile
                sealed = self.sealed(upload)
                if sealed is not None and not self.published(upload):
                    found.append((upload, sealed))
        return found

    # published recently ----------------------------------------------------------------------------------

    def mark_published(self, name: str, digest: str, size: int) -> None:
        marker = self._published_marker(name, digest)
        _write_in_fresh_folder(marker, json.dumps({"name": name, "size": size, "at": time.time()}))

    def recently_published(self, name: str, digest: str) -> tuple[int, float] | None:
        """(size, when) if a process sharing this disk put `digest` in `name` within PUBLISHED_TTL_S."""
        found = _read_json(self._published_marker(name, digest))
        try:
            size, at = int(found["size"]), float(found["at"])  # type: ignore[index]
        except (TypeError, KeyError, ValueError):
            return None
        if found.get("name") != name or time.time() - at > PUBLISHED_TTL_S:  # type: ignore[union-attr]
            return None
        return size, at

    def forget_published(self, name: str, digest: str) -> None:
        """The blob was deleted from `name`: no process may answer from the marker any more."""
        self._published_marker(name, digest).unlink(missing_ok=True)

    def expire_published(self) -> int:
        """Remove published markers and sessions older than PUBLISHED_TTL_S (the purge does, now and then)."""
        removed = 0
        folder = self.root / PUBLISHED_MARKERS
        cutoff = time.time() - PUBLISHED_TTL_S
        for upload_id in self.session_ids():
            receipt = self.root / upload_id / PUBLISHED
            with contextlib.suppress(OSError):
                if receipt.stat().st_mtime < cutoff:
                    self._remove_directory(receipt.parent)
        for leftover in self.root.glob(f"*{REMOVING}*"):  # a process stopped while deleting it
            with contextlib.suppress(OSError):
                if leftover.stat().st_mtime < cutoff:
                    shutil.rmtree(leftover, ignore_errors=True)
        for marker in folder.glob("*/*") if folder.is_dir() else []:
            with contextlib.suppress(OSError):
                if marker.stat().st_mtime < cutoff:
                    marker.unlink()
                    removed += 1
                    _remove_empty(marker.parent, self.root)
        return removed

    # derived documents -------------------------------------------------------------------------------------

    def shared_document(self, key: str) -> Document | None:
        """The version of the document at `key` that a process sharing this disk last wrote, if any."""
        found = _read_json(self._document(key))
        try:
            entries, etag, at = found["entries"], found["etag"], float(found["at"])  # type: ignore[index]
        except (TypeError, KeyError, ValueError):
            return None
        if found.get("key") != key or not isinstance(entries, list) or not isinstance(etag, str | None):  # type: ignore[union-attr]
            return None
        version = found.get("version")  # type: ignore[union-attr]
        return Document(frozenset(map(str, entries)), etag, at, version if isinstance(version, int) else None)

    def share_document(self, key: str, document: Document) -> None:
        record = {"key": key, "entries": sorted(document.entries), "etag": document.etag, "at": document.at}
        record["version"] = document.version
        _write_in_fresh_folder(self._document(key), json.dumps(record))

    @contextlib.asynccontextmanager
    async def document_turn(self, key: str) -> AsyncIterator[None]:
        """This process's turn at writing the document at `key`, among the processes sharing this disk."""
        lock = self._document(key).with_suffix(".lock")
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            await _flock(fd)
            yield
        finally:
            os.close(fd)

    def _document(self, key: str) -> Path:
        return self.root / DOCUMENTS / hashlib.sha256(key.encode()).hexdigest()[:32]

    # locks -------------------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def session_lock(self, upload: Upload) -> AsyncIterator[None]:
        """The cross-process half of a session's lock (the caller holds the in-process half). A session removed
        meanwhile needs no lock: the caller finds it gone."""
        try:
            fd = os.open(upload.directory / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except (FileNotFoundError, NotADirectoryError):
            yield
            return
        try:
            await _flock(fd)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _verified_marker(self, digest: str, upload_id: str) -> Path:
        return self.root / VERIFIED_MARKERS / digest / upload_id

    def _published_marker(self, name: str, digest: str) -> Path:
        repository = hashlib.sha256(name.encode()).hexdigest()[:32]
        return self.root / PUBLISHED_MARKERS / digest / repository


async def _flock(fd: int) -> None:
    """An exclusive flock on `fd`, waited for without blocking the event loop (and cancellable)."""
    wait = LOCK_POLL_S[0]
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
        await asyncio.sleep(wait)
        wait = min(wait * 2, LOCK_POLL_S[1])


def _write_in_fresh_folder(path: Path, text: str) -> None:
    """Write `path`, making its folder; another process may remove the empty folder just then (even between
    mkdir's "it exists" and its check that it is a folder: FileExistsError): try again."""
    for attempt in range(MARKER_ATTEMPTS):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")  # writers of one marker never share a temp
            temp.write_text(text)
            os.replace(temp, path)
            return
        except (FileNotFoundError, FileExistsError):
            if attempt + 1 == MARKER_ATTEMPTS:
                raise


def _remove_empty(folder: Path, stop: Path) -> None:
    """Remove `folder` and its parents up to (not including) `stop` while they are empty."""
    with contextlib.suppress(OSError):
        while folder != stop and folder.is_relative_to(stop):
            folder.rmdir()
            folder = folder.parent


def _read_json(path: Path) -> dict | None:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None
