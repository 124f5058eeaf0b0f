"""Sending an upload to the bucket while the client is still sending it: overlapped S3 multipart uploads.

Why: publishing only after the final PUT makes a push last receive time + upload time. Instead, each time the
staged file crosses a part boundary (64 MiB), that part goes to a multipart upload while the next bytes arrive;
the final PUT only verifies the digest, sends the short tail and completes.

Where: the digest, and so the blob's key, is known only at the final PUT, and S3 cannot rename. Clients ask for
a blob (HEAD, 404) just before uploading it, so when exactly one such digest of the repository is pending, the
multipart upload is created at that blob's own key and completed there once the digest is verified to match.
Otherwise (or when the guess was wrong) it is created at a staging key (`layout.staged_upload`), completed after
verification, copied to the blob's key with one CopyObject and deleted. The copy is metadata-only on Storj, but
SeaweedFS copies the bytes (about 1.5 s and 2.8 CPU-seconds per 512 MiB here), hence the guess. A wrong guess
costs speed, never correctness: that multipart upload is aborted and the file is sent whole. Nothing unverified
is ever visible: an unfinished multipart upload is invisible, and a mismatch, a cancel or the purge aborts it.

Truth: the staged file stays the truth. `parts.json` beside it records the multipart upload id and, per part,
the size and ETag sent; a part counts only if it covers its whole range of the current file (truncation drops
the parts beyond first). So after a restart, or when another replica finishes the upload from a shared staging
volume, the commit resends only what is missing; if the multipart upload is gone (aborted, expired), the caller
falls back to uploading the file whole. A part that fails while the client is uploading is not an error then:
the commit resends it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from app import layout
from app.storage.base import MultipartStorage, ObjectExists

log = logging.getLogger("storj_registry")

STATE_FILE = "parts.json"

# The blob key this session will most likely end under, or None (see `Uploads.guess_key`).
KeyGuess = Callable[[], str | None]


@dataclass
class _State:
    """What `parts.json` holds: the multipart upload and, per part number, (size, ETag) of what was sent."""

    key: str
    upload_id: str
    parts: dict[int, tuple[int, str]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> _State | None:
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        parts = {int(number): (size, etag) for number, (size, etag) in raw["parts"].items()}
        return cls(raw["key"], raw["upload_id"], parts)

    def save(self, path: Path) -> None:
        """Atomically: a reader (another replica, a restart) sees the old or the new state, never half."""
        temp = path.with_suffix(".tmp")
        temp.write_text(json.dumps({"key": self.key, "upload_id": self.upload_id, "parts": self.parts}))
        os.replace(temp, path)


class PartSender:
    """The long-lived half: the store, and one thread pool shared by every session's parts."""

    def __init__(self, storage: MultipartStorage, writer: str = "") -> None:
        self.storage = storage
        self.writer = writer  # the gc participant beginning the uploads: recorded with each (layout.multipart_record)
        self.part_size = storage.part_size
        self.per_upload = storage.max_concurrency
        self.pool = ThreadPoolExecutor(max_workers=storage.max_concurrency * 4, thread_name_prefix="parts")

    def session(self, directory: Path, upload_id: str, guess: KeyGuess) -> StagedParts:
        return StagedParts(self, directory, upload_id, guess)

    def abandon(self, directory: Path) -> None:
        """Abort the multipart upload recorded in a session directory about to be removed (blocking)."""
        state = _State.load(directory / STATE_FILE)
        if state is not None:
            self.storage.abort_multipart(state.key, state.upload_id)
            self.unrecord(state.key)

    def record(self, key: str) -> None:
        """Before a multipart upload to `key` begins: who is sending it (a process may die before any answer)."""
        if self.writer:
            self.storage.put_bytes(layout.multipart_record(self.writer, key), b"", layout.TEXT)

    def unrecord(self, key: str) -> None:
        """Behind the answer: a record left (the process stopped first) is removed by the next gc."""
        if self.writer:
            self.pool.submit(self.storage.delete, layout.multipart_record(self.writer, key))


class StagedParts:
    """One session's multipart upload. `advance` never blocks (event loop); every other method does (threads)."""

    def __init__(self, sender: PartSender, directory: Path, upload_id: str, guess: KeyGuess) -> None:
        self.sender = sender
        self.data = directory / "data"
        self.state_path = directory / STATE_FILE
        self.upload_id = upload_id
        self.staged_key = layout.staged_upload(upload_id)
        self.guess = guess
        # Reentrant: a future that is already done runs its callback (`_finished`) inside `_pump`.
        self._lock = threading.RLock()
        self._begin = threading.Lock()
        self._queued: deque[int] = deque()
        self._inflight: dict[int, Future[None]] = {}
        self._scheduled = self._sent_in_a_row()  # parts up to this number are sent, in flight or queued

    def _sent_in_a_row(self) -> int:
        """How many full parts from the first were already sent (by this process before a restart, or a replica)."""
        state = _State.load(self.state_path)
        count = 0
        while state is not None and state.parts.get(count + 1, (0, ""))[0] == self.sender.part_size:
            count += 1
        return count

    # while the client uploads ------------------------------------------------------------------------

    def advance(self, size: int) -> None:
        """Queue every full part that lies below `size` bytes and was not queued yet."""
        full = size // self.sender.part_size
        with self._lock:
            while self._scheduled < full:
                self._scheduled += 1
                self._queued.append(self._scheduled)
            self._pump()

    def _pump(self) -> None:
        """Start queued parts up to the per-upload limit (called with `_lock` held)."""
        while self._queued and len(self._inflight) < self.sender.per_upload:
            number = self._queued.popleft()
            future = self.sender.pool.submit(self._send_quietly, number)
            self._inflight[number] = future
            future.add_done_callback(lambda _, number=number: self._finished(number))

    def _finished(self, number: int) -> None:
        with self._lock:
            self._inflight.pop(number, None)
            self._pump()

    def _send_quietly(self, number: int) -> None:
        try:
            self._send(number, self.sender.part_size)
        except Exception as exc:  # whatever it was, the commit checks every part and resends this one
            log.warning(
                "part %d of upload %s not sent yet (%s); the commit will resend it", number, self.upload_id, exc
            )

    def settle(self) -> None:
        """Wait until every queued and in-flight part is done (so `parts.json` is complete for any replica)."""
        while True:
            with self._lock:
                pending = list(self._inflight.values())
                if not pending and not self._queued:
                    return
            wait(pending)

    def truncated(self, size: int) -> None:
        """The staged file is about to shrink to `size`: forget every part that reaches beyond it."""
        self.settle()
        with self._lock:
            self._scheduled = min(self._scheduled, size // self.sender.part_size)
            state = _State.load(self.state_path)
            if state is not None:
                state.parts = {n: p for n, p in state.parts.items() if n * self.sender.part_size <= size}
                state.save(self.state_path)

    # at the final PUT ---------------------------------------------------------------------------------

    def publish(self, size: int, key: str) -> bool:
        """Send what is missing, complete, and move to `key` if needed. False when the file must be sent whole.

        Call only after the digest is verified: completion makes the bytes an object. That is also why a
        multipart upload begun at another blob's key (a wrong guess) is aborted, never completed.
        """
        self.settle()
        state = _State.load(self.state_path)
        staged = state is not None and state.key == self.staged_key
        if state is None or size < self.sender.part_size or not (staged or state.key == key):
            self.forget()  # nothing sent, truncated below one part, or begun under another digest
            return False
        try:
            self._complete(state, size, if_absent=not staged)
        except KeyError:  # the multipart upload is gone: aborted, expired, or completed by an earlier attempt
            if not self._completed_before(state.key, size):
                self.forget()
                return False
        except ObjectExists:  # another push published the same blob meanwhile: these parts are not needed
            self.forget()
            return True
        if staged:
            with contextlib.suppress(ObjectExists):
                self.sender.storage.copy(state.key, key, if_absent=True)
            self.sender.storage.delete(state.key)
        self.state_path.unlink(missing_ok=True)
        return True

    def _complete(self, state: _State, size: int, *, if_absent: bool) -> None:
        """Resend every part not recorded at its full length for `size` bytes (usually just the tail), complete."""
        numbers = range(1, -(-size // self.sender.part_size) + 1)
        missing = [n for n in numbers if state.parts.get(n, (-1, ""))[0] != self._length(n, size)]
        for future in [self.sender.pool.submit(self._send, n, self._length(n, size)) for n in missing]:
            future.result()
        state = _State.load(self.state_path) or state
        etags = [state.parts[n][1] for n in numbers]
        self.sender.storage.complete_multipart(state.key, state.upload_id, etags, if_absent=if_absent)
        self.sender.unrecord(state.key)

    def _completed_before(self, key: str, size: int) -> bool:
        """Did an earlier attempt complete the upload (and then fail to copy, or lose the answer)?"""
        info = self.sender.storage.stat(key)
        return info is not None and info.size == size

    def forget(self) -> None:
        """Abort the multipart upload, if any, and drop its record (mismatch, cancel, or a blob already there)."""
        self.settle()
        state = _State.load(self.state_path)
        if state is not None:
            self.sender.storage.abort_multipart(state.key, state.upload_id)
            self.sender.unrecord(state.key)
            if state.key == self.staged_key:  # never a blob's key: that object, if any, is someone's blob
                self.sender.storage.delete(state.key)
            self.state_path.unlink(missing_ok=True)

    # sending ------------------------------------------------------------------------------------------

    def _length(self, number: int, size: int) -> int:
        return min(self.sender.part_size, size - (number - 1) * self.sender.part_size)

    def _send(self, number: int, length: int) -> None:
        state = self._started()
        offset = (number - 1) * self.sender.part_size
        etag = self.sender.storage.put_part(state.key, state.upload_id, number, self.data, offset, length)
        with self._lock:
            state = _State.load(self.state_path)
            assert state is not None
            state.parts[number] = (length, etag)
            state.save(self.state_path)

    def _started(self) -> _State:
        """The recorded multipart upload, created on first use (once, whichever part thread gets here first).

        Its key is the blob's own when the guess names one (no copy at the end), the staging key otherwise.
        """
        with self._begin:
            state = _State.load(self.state_path)
            if state is None:
                key = self.guess() or self.staged_key
                self.sender.record(key)
                upload_id = self.sender.storage.begin_multipart(
                    key, layout.OCTET_STREAM, layout.MANIFEST_CACHE_IMMUTABLE
                )
                state = _State(key, upload_id)
                state.save(self.state_path)
            return state
