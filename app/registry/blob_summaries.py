"""Blob summaries: what a repository too big to list in one page holds, in one small object.

Why: a push asks about every blob it would upload (a HEAD). Where a repository's blobs fit one listing page, that
one listing answers all of a push's questions (app/registry/beliefs.py); past a page, each question would be a
HEAD to the store, and a push into a big repository would cost more than one into a small one. The summary
`v2/_summaries/<name>/_blobs` holds the first 4 bytes of every blob digest of the repository, sorted: one read of
it (20 KB at 5,000 blobs) answers "absent" for any digest whose prefix it lacks. A prefix it has is only a
"maybe" (a false one is about 1 in 860,000 at 5,000 blobs): the store is asked.

What keeps it correct: a summary only ever answers "absent", and a wrong "absent" costs a client the upload of a
blob the repository already holds, nothing worse: the blob's write is create-only (the bytes there stay), and a
manifest's references are checked against what was written or the store, never against a summary.
- A process that commits blobs to a repository it knows to be big rewrites the summary when it commits a manifest
  (once per push), behind the answer: what it read (now and before) and what it wrote (also at exit, when a push
  stopped before its manifest). Two writers at once (replicas sharing a staging disk without peers, two owners
  during a change of owners, a `copy`) may each leave out what the other just wrote; the next rewrite by either
  after it reads the summary again (a listing's window later) puts it back.
- A big repository without a summary (it grew past a page before summaries were written) gets one from a full
  listing, once, behind the push that found it missing.
- gc and deletes leave the prefixes of what they remove: a "maybe" the store answers.
- `fsck` reports a big repository's summary that is missing or lacks a blob; `--repair` rebuilds it.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from array import array
from bisect import bisect_left
from collections.abc import Iterable
from typing import TYPE_CHECKING

from anyio.to_thread import run_sync as run

from app import layout
from app.registry.references import DIGEST_RE
from app.storage import Storage, StorageFault

if TYPE_CHECKING:
    from app.registry.beliefs import Beliefs

log = logging.getLogger("storj_registry")

MAGIC = b"storj-registry blob summary 1\n"
KEY_INTERVAL_S = 1.0  # Storj takes about one write a second to a key: later rewrites wait that long
_PREFIXES = "I"  # unsigned 32-bit, stored big-endian
assert array(_PREFIXES).itemsize == 4


def prefix(digest: str) -> int:
    """The part of a digest a summary keeps: its first 4 bytes (the algorithm is left out)."""
    return int(digest.partition(":")[2][:8], 16)


class Summary:
    """A sorted array of digest prefixes: 4 bytes a blob in memory as in the bucket."""

    def __init__(self, prefixes: Iterable[int] = ()) -> None:
        self._sorted = array(_PREFIXES, sorted(set(prefixes)))

    @classmethod
    def of(cls, digests: Iterable[str]) -> Summary:
        return cls(map(prefix, digests))

    def __contains__(self, digest: object) -> bool:
        wanted = prefix(str(digest))
        at = bisect_left(self._sorted, wanted)
        return at < len(self._sorted) and self._sorted[at] == wanted

    def __len__(self) -> int:
        return len(self._sorted)

    def __or__(self, other: Summary) -> Summary:
        return Summary([*self._sorted, *other._sorted])

    def copy(self) -> Summary:
        return self | Summary()

    def add(self, digest: str) -> None:
        wanted = prefix(digest)
        at = bisect_left(self._sorted, wanted)
        if at == len(self._sorted) or self._sorted[at] != wanted:
            self._sorted.insert(at, wanted)

    def encode(self) -> bytes:
        stored = array(_PREFIXES, self._sorted)
        if sys.byteorder == "little":
            stored.byteswap()
        return MAGIC + stored.tobytes()

    @classmethod
    def decode(cls, document: bytes) -> Summary | None:
        """The summary a stored object holds, or None for one that is not a summary (it is then rebuilt)."""
        body = document.removeprefix(MAGIC)
        if len(body) == len(document) or len(body) % 4:
            return None
        stored = array(_PREFIXES, body)
        if sys.byteorder == "little":
            stored.byteswap()
        return cls(stored)


def listed(storage: Storage, name: str) -> Summary:
    """A summary of the repository's blobs from a listing of all of them (every page)."""
    return Summary.of(key for key in storage.list_children(layout.blobs_dir(name)) if DIGEST_RE.fullmatch(key))


def write(storage: Storage, name: str, summary: Summary) -> None:
    storage.put_bytes(layout.blob_summary(name), summary.encode(), layout.OCTET_STREAM, layout.MUTABLE_CACHE)


def rebuild(storage: Storage, name: str) -> None:
    """Write the repository's summary from a listing (fsck)."""
    write(storage, name, listed(storage, name))


class BlobSummaries:
    """The writer of summaries: behind the answers of the pushes that commit blobs to big repositories."""

    def __init__(self, storage: Storage, beliefs: Beliefs) -> None:
        self.storage = storage
        self.beliefs = beliefs
        self._dirty: set[str] = set()
        self._writing: dict[str, asyncio.Task[None]] = {}

    def wrote(self, name: str) -> None:
        """A blob was just committed to `name`: its summary, if it is a repository that has one, is out of date."""
        if self.beliefs.blobs_too_big(name):
            self._dirty.add(name)

    def flush(self, name: str) -> None:
        """A manifest was committed to `name`: write its summary if it is out of date (behind the answer)."""
        if name in self._dirty and name not in self._writing:
            self._writing[name] = asyncio.create_task(self._write_while_dirty(name))

    async def _write_while_dirty(self, name: str) -> None:
        """One writer per repository: what was committed while it wrote goes in its next write, a moment later."""
        try:
            while name in self._dirty:
                self._dirty.discard(name)
                await self._write(name)
                if name in self._dirty:
                    await asyncio.sleep(KEY_INTERVAL_S)
        except StorageFault as exc:  # memory keeps what it wrote: the next push's rewrite has it
            log.warning("could not write the blob summary of %s: %s", name, exc)
        finally:
            del self._writing[name]

    async def _write(self, name: str) -> None:
        prefixes = await self.beliefs.blob_summary(name)
        if prefixes is None:  # none stored, or not one: from a listing of every page
            started = self.beliefs.clock()
            prefixes = self.beliefs.learn_blob_summary(name, await run(listed, self.storage, name), started)
        await run(write, self.storage, name, prefixes)

    async def settle(self) -> None:
        """Write what is out of date, and wait for the writes in flight (shutdown, tests)."""
        for name in list(self._dirty):
            self.flush(name)
        if self._writing:
            await asyncio.gather(*self._writing.values(), return_exceptions=True)
