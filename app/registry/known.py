"""What the service remembers about the bucket, so that a push asks the store (a WAN away) as little as possible.

Blobs and manifests by digest are content-addressed: once written they never change, and only deletes (the API's
DELETE, when enabled) and `gc` remove them. So, per repository, the service remembers which blobs and manifests it
knows to be in the bucket and since when, learnt from its own writes and from listings: one LIST answers up to a
thousand existence questions that would each cost a HEAD.

What that knowledge may decide, and why it is safe:
- **A client's HEAD** is answered from a listing, or this process's own write, at most `LISTING_TTL_S` old.
  A wrong "absent" (another replica wrote the blob since) costs a re-upload, and the commit is create-only, so the
  object is not written twice. A wrong "present" makes the client skip an upload, which the manifest check catches.
- **A manifest is published** only when every blob and child manifest it names is vouched for: written by this
  process within `WRITE_TRUST_S` (gc keeps every object younger than its grace period, 24 h by default, so it
  cannot have removed it), or seen by a listing or HEAD at most `EVIDENCE_TRUST_S` ago (about the gap a HEAD at
  publish time would leave anyway). Anything else is checked against the store right then.
- **With deletes enabled** another replica may delete anything at any moment, so nothing is vouched for: every
  reference is checked against the store when the manifest is published (one listing, or a few HEADs).
- Deletes through this process forget what they remove at once. While a `gc --delete` run is announced nothing
  is vouched for and HEADs go to the store; after it, only what was learnt once its end was seen counts.

A repository whose blob listing takes more than `MAX_LISTING_PAGES` pages is not listed again: its questions go to
the store one HEAD each, which is then cheaper. Memory is bounded: at most `MAX_REPOSITORIES` repositories are
remembered, the least recently used forgotten first.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum

from anyio.to_thread import run_sync as run

from app import layout
from app.storage import Storage

LISTING_TTL_S = 30.0
WRITE_TRUST_S = 600.0
EVIDENCE_TRUST_S = 10.0
MAX_LISTING_PAGES = 4
LISTING_PAGE = 1000
MAX_REPOSITORIES = 128
MAX_HEADS = 4  # more unvouched references than this are checked with one listing instead
HEAD_CONCURRENCY = 8


class Kind(Enum):
    BLOB = "blobs"
    MANIFEST = "manifests"


@dataclass
class _Seen:
    size: int | None  # None: there, of a size not known (copied from a repository whose blob size was not known)
    at: float  # monotonic time of the evidence
    written: bool = False  # by this process


@dataclass
class _Objects:
    """One kind of object of one repository: what is known of each, and when the kind was last listed whole."""

    seen: dict[str, _Seen] = field(default_factory=dict)
    listed_at: float = -math.inf
    too_big: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class _Repository:
    blobs: _Objects = field(default_factory=_Objects)
    manifests: _Objects = field(default_factory=_Objects)

    def of(self, kind: Kind) -> _Objects:
        return self.blobs if kind is Kind.BLOB else self.manifests


class Known:
    def __init__(
        self,
        storage: Storage,
        *,
        deletes_enabled: bool,
        trusted_since: Callable[[], float] = lambda: -math.inf,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.storage = storage
        self.deletes_enabled = deletes_enabled
        # Evidence counts only if newer than this: a gc run (app/registry/gc_runs.py) may delete anything older.
        self.trusted_since = trusted_since
        self.clock = clock
        self._repositories: OrderedDict[str, _Repository] = OrderedDict()

    # learning ---------------------------------------------------------------------------------------------

    def wrote(self, name: str, kind: Kind, reference: str, size: int) -> None:
        """This process has just written (or found already written) the object."""
        self._repository(name).of(kind).seen[reference] = _Seen(size, self.clock(), written=True)

    def forget(self, name: str, kind: Kind, reference: str) -> None:
        """The object was deleted (by this process), or found missing."""
        self._repository(name).of(kind).seen.pop(reference, None)

    def copied_blob(self, name: str, digest: str, source: str) -> None:
        """The blob was just copied into `name` from `source`: known to be there, with the source's size if known
        (else a HEAD asks for it when someone needs it)."""
        seen = self._repository(source).blobs.seen.get(digest)
        self._repository(name).blobs.seen[digest] = _Seen(seen.size if seen else None, self.clock(), written=True)

    def holders(self, digest: str) -> list[str]:
        """Repositories this process knows to hold the blob right now (longest known first)."""
        holders = []
        for name, repository in self._repositories.items():
            seen = repository.blobs.seen.get(digest)
            if seen is not None and self._recent(seen.at):
                holders.append(name)
        return holders

    def _recent(self, at: float) -> bool:
        """May evidence from `at` answer a client (learnt after the last gc run, at most LISTING_TTL_S ago)?"""
        return self.trusted_since() < at and self.clock() - at < LISTING_TTL_S

    # answering a client ---------------------------------------------------------------------------------

    async def size(self, name: str, kind: Kind, reference: str) -> int | None:
        """The object's size if it is in the bucket, None if not; from memory when fresh, else from the store."""
        objects = self._repository(name).of(kind)
        if self.trusted_since() == math.inf:  # a gc run is on: only the store knows
            return await self._head(name, kind, reference)
        answer = self._recall(objects, reference)
        if answer is not _UNKNOWN:
            return answer  # type: ignore[return-value]
        if not objects.too_big and reference not in objects.seen:
            await self.warm(name)  # a push asks next about the other kind (its manifest, tags): one round trip
            answer = self._recall(objects, reference)
        return await self._head(name, kind, reference) if answer is _UNKNOWN else answer  # type: ignore[return-value]

    def _recall(self, objects: _Objects, reference: str) -> int | object | None:
        """The size from memory, None for "absent", or _UNKNOWN (never seen, seen too long ago, size not known)."""
        seen = objects.seen.get(reference)
        if seen is not None and self._recent(seen.at):
            return seen.size if seen.size is not None else _UNKNOWN
        if seen is None and self._recent(objects.listed_at):
            return None
        return _UNKNOWN

    async def warm(self, name: str) -> None:
        """List the repository's blobs and manifests (together: one round trip) unless they are fresh."""
        repository = self._repository(name)
        await asyncio.gather(*(self._list(name, kind, repository.of(kind)) for kind in Kind))

    def tags(self, name: str) -> set[str] | None:
        """The repository's tags as last listed (plus those this process wrote since), or None when never listed."""
        manifests = self._repository(name).manifests
        if manifests.listed_at == -math.inf or manifests.too_big:
            return None
        return {reference for reference in manifests.seen if ":" not in reference}

    # vouching for a manifest's references -----------------------------------------------------------------

    def vouched(self, name: str, kind: Kind, reference: str) -> bool:
        """May a manifest naming this object be published without asking the store? (See the module's rules.)"""
        if self.deletes_enabled:
            return False
        seen = self._repository(name).of(kind).seen.get(reference)
        if seen is None or seen.at <= self.trusted_since():
            return False
        age = self.clock() - seen.at
        return age < EVIDENCE_TRUST_S or (seen.written and age < WRITE_TRUST_S)

    async def missing(self, name: str, blobs: Iterable[str], manifests: Iterable[str]) -> list[str]:
        """Which of these blobs and child manifests are not in the repository (empty: all are).

        Memory answers what it can vouch for; the rest is checked against the store now: a few HEADs, or one
        listing per kind when there are many (a manifest may name thousands of layers). Stops at the first
        batch of HEADs that finds one missing.
        """
        wanted = [(Kind.BLOB, d) for d in dict.fromkeys(blobs)] + [(Kind.MANIFEST, d) for d in dict.fromkeys(manifests)]
        unvouched = [(kind, ref) for kind, ref in wanted if not self.vouched(name, kind, ref)]
        repository = self._repository(name)
        if len(unvouched) <= MAX_HEADS or any(repository.of(kind).too_big for kind, _ in unvouched):
            return await self._check_by_head(name, unvouched)
        for kind in {kind for kind, _ in unvouched}:
            await self._list(name, kind, repository.of(kind), force=True)
        return [ref for kind, ref in unvouched if ref not in repository.of(kind).seen]

    async def _check_by_head(self, name: str, references: list[tuple[Kind, str]]) -> list[str]:
        for start in range(0, len(references), HEAD_CONCURRENCY):
            batch = references[start : start + HEAD_CONCURRENCY]
            sizes = await asyncio.gather(*(self._head(name, kind, ref) for kind, ref in batch))
            missing = [ref for (_, ref), size in zip(batch, sizes, strict=True) if size is None]
            if missing:
                return missing
        return []

    # asking the store -------------------------------------------------------------------------------------

    async def _head(self, name: str, kind: Kind, reference: str) -> int | None:
        key = layout.blob(name, reference) if kind is Kind.BLOB else layout.manifest(name, reference)
        info = await run(self.storage.stat, key)
        objects = self._repository(name).of(kind)
        if info is None:
            objects.seen.pop(reference, None)
            return None
        objects.seen[reference] = _Seen(info.size, self.clock())
        return info.size

    async def _list(self, name: str, kind: Kind, objects: _Objects, *, force: bool = False) -> None:
        """Replace what is known of one kind of the repository's objects by a listing (one at a time)."""
        requested = self.clock()
        async with objects.lock:
            if objects.listed_at >= requested or (not force and requested - objects.listed_at < LISTING_TTL_S):
                return  # listed meanwhile, or fresh enough
            started = self.clock()
            prefix = layout.blobs_dir(name) if kind is Kind.BLOB else layout.manifests_dir(name)
            listed = await run(self._list_at_most, prefix)
            if listed is None:
                objects.too_big = True
                return
            written_since = {ref: seen for ref, seen in objects.seen.items() if seen.written and seen.at >= started}
            objects.seen = {ref: _Seen(size, started) for ref, size in listed} | written_since
            objects.listed_at = started

    def _list_at_most(self, prefix: str) -> list[tuple[str, int]] | None:
        """The children of `prefix` with their sizes, or None past MAX_LISTING_PAGES pages."""
        listed = []
        for child in self.storage.list_children_sized(prefix):
            listed.append(child)
            if len(listed) > MAX_LISTING_PAGES * LISTING_PAGE:
                return None
        return listed

    def _repository(self, name: str) -> _Repository:
        repository = self._repositories.pop(name, None) or _Repository()
        self._repositories[name] = repository
        while len(self._repositories) > MAX_REPOSITORIES:
            self._repositories.popitem(last=False)
        return repository


_UNKNOWN = object()
