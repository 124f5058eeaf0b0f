"""What the service believes about the bucket: the one owner of every "we know the answer, skip the request".

Every S3 request is a WAN round trip, so a push asks the store only what it must. Whatever this process
remembers about the bucket, it remembers here, under one freshness rule and one list of what ends a belief.

**The freshness rule.** A belief learnt at time `t` (wall clock, so that evidence other processes leave on the
shared staging disk compares) may answer a question at time `now` only if `t` is after the *horizon* and
`now - t` is under the question's window:

| question | window | also requires |
|---|---|---|
| a client's HEAD: is the blob there? (yes) | LISTING_TTL_S | |
| a client's HEAD: is the blob there? (no) | LISTING_TTL_S, from a listing, | no process sharing the staging |
| | or from a summary (big repositories) | disk published it since |
| may a manifest naming it be published without asking? | EVIDENCE_TRUST_S (seen), | deletes disabled |
| | WRITE_TRUST_S (written here), | |
| | PUBLISHED_TTL_S (written by a replica sharing the staging disk) | |
| is the tag in `tags/list`? the repository in `_catalog`? | DOCUMENT_TRUST_S | deletes disabled |
| is there a location record for the blob? (a hint) | RECORDS_TTL_S, from a listing | |
| may a HEAD miss share the blob back? | until a write of it here | it was not deleted here |

The horizon is when the last `gc --delete` run was seen to end (`GcRuns.horizon`), or when the replicas owning
repositories last changed, whichever is later; while a run is announced it is +inf and nothing counts: the store
is asked.

**What ends a belief** (and where that happens):
- a DELETE through this process: `deleted` (the object, its staging evidence, a tombstone against sharing);
- a gc run (retention included): the horizon moves past everything learnt before its end was seen;
- deletes enabled (`REGISTRY_DELETE_ENABLED`): any replica may delete at any moment, so nothing is vouched for
  and no document is trusted; a client's HEAD still answers from a listing (a wrong "yes" is caught by the
  manifest's check, which asks the store);
- a write by another process: content-addressed objects never change, so "present" stays true; "absent" is
  given from a listing only when no process sharing the staging disk published the blob since (replicas on a
  shared volume write a marker there first; a marker counts only if written after this process started and
  after the horizon: a run before may have removed the blob). A writer outside (a `copy` on another machine)
  can make that "absent" wrong for up to LISTING_TTL_S: the client uploads the blob again and the create-only
  write keeps the one already there (nothing a client relies on is answered wrong: the blob it uploaded itself
  is known);
- a change among the replicas that own repositories (app/cluster/): a repository this process owns now may have
  been written by its previous owner, which this process never heard of; `writers_changed` moves the horizon
  past everything learnt before (the next questions list again);
- `fsck --repair`: what it adds (derived documents, digest keys) makes no belief false; what it removes (a
  corrupt blob, a stale catalog entry) it removes during an announced run, which moves the horizon.

Not beliefs: `v2/index.html` and the catalog page are written once per process (create-only / compared), the
next-digest guess of an upload (`Uploads.wanted`) costs speed only when wrong, and the gc claims a replica made
live as long as their run (app/registry/gc_runs.py).

A repository whose blob listing fills a page (WARM_LISTING_PAGES) is not listed again: its blob questions are
answered from its summary (app/registry/blob_summaries.py, one read for all of them: "absent", or "maybe", which
the store answers with a HEAD), so a push costs the same in a repository of any size. At most MAX_REPOSITORIES
repositories are remembered, the least recently used forgotten.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum

from anyio.to_thread import run_sync as run

from app import layout
from app.registry import blob_summaries, versions
from app.registry.formats import Descriptor
from app.registry.staging import Document, Staging
from app.storage import Storage

LISTING_TTL_S = 30.0
WRITE_TRUST_S = 600.0
EVIDENCE_TRUST_S = 10.0
DOCUMENT_TRUST_S = 600.0
RECORDS_TTL_S = 60.0
MAX_LISTING_PAGES = 4  # to check a manifest's many references at once
WARM_LISTING_PAGES = 1  # at a repository's first question: past one page, questions go to the store one by one
LISTING_PAGE = 1000
MAX_REPOSITORIES = 128
MAX_TOMBSTONES = 4096
MAX_HEADS = 4  # more unvouched references than this are checked with one listing instead
HEAD_CONCURRENCY = 8
UNKNOWN_SIZE = -1  # there, of a size not known (copied from a repository whose blob size was not known)


class Kind(Enum):
    BLOB = "blobs"
    MANIFEST = "manifests"


@dataclass
class _Seen:
    size: int | None  # None: there, of a size not known (copied from a repository whose blob size was not known)
    at: float  # when the evidence was had (wall clock)
    written: bool = False  # by this process


@dataclass
class _Objects:
    """One kind of object of one repository: what is known of each, and when the kind was last listed whole."""

    seen: dict[str, _Seen] = field(default_factory=dict)
    listed_at: float = -math.inf
    too_big: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    summary: blob_summaries.Summary | None = None  # of a repository too big to list (None: none read or stored)
    summarised_at: float = -math.inf
    summary_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def written(self) -> blob_summaries.Summary:
        return blob_summaries.Summary.of(ref for ref, seen in self.seen.items() if seen.written)


@dataclass
class _Repository:
    blobs: _Objects = field(default_factory=_Objects)
    manifests: _Objects = field(default_factory=_Objects)
    tags: Document | None = None  # `tags/list`
    tags_read_at: float = -math.inf
    tags_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def of(self, kind: Kind) -> _Objects:
        return self.blobs if kind is Kind.BLOB else self.manifests


class Beliefs:
    def __init__(
        self,
        storage: Storage,
        staging: Staging | None = None,
        *,
        deletes_enabled: bool = False,
        horizon: Callable[[], float] = lambda: -math.inf,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        self.staging = staging
        self.deletes_enabled = deletes_enabled
        self.gc_horizon = horizon  # nothing learnt before it counts (app/registry/gc_runs.py)
        self._writers_changed_at = -math.inf
        self.clock = clock
        self._repositories: OrderedDict[str, _Repository] = OrderedDict()
        self._deleted: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.catalog: Document | None = None
        self._records: set[str] = set()
        self._records_listed_at = -math.inf
        self._records_written: set[str] = set()
        # Evidence other processes left on the staging disk counts only from this process's start on: a gc run
        # (or an fsck repair) before it may have removed what that evidence tells of, and it never saw the run.
        self.started = clock()

    def horizon(self) -> float:
        return max(self.gc_horizon(), self._writers_changed_at)

    def writers_changed(self) -> None:
        """Other processes may have written what this one believed absent, or may not know what it wrote."""
        self._writers_changed_at = self.clock()

    def fresh(self, at: float, window: float) -> bool:
        """The one rule: learnt after the horizon, and less than `window` seconds ago."""
        return self.horizon() < at and self.clock() - at < window

    # learning -------------------------------------------------------------------------------------------------

    def wrote(self, name: str, kind: Kind, reference: str, size: int) -> None:
        """This process has just written (or found already written) the object."""
        objects = self._repository(name).of(kind)
        objects.seen[reference] = _Seen(size, self.clock(), written=True)
        if kind is Kind.BLOB:
            self._deleted.pop((name, reference), None)
            if objects.summary is not None:
                objects.summary.add(reference)

    def forget(self, name: str, kind: Kind, reference: str) -> None:
        """The object was found missing, or is about to be deleted here."""
        self._repository(name).of(kind).seen.pop(reference, None)

    def deleted_blob(self, name: str, digest: str) -> None:
        """A DELETE through this process: forget the blob, its staging evidence, and never share it back."""
        self.forget(name, Kind.BLOB, digest)
        if self.staging is not None:
            self.staging.forget_published(name, digest)
        self._deleted[(name, digest)] = None
        while len(self._deleted) > MAX_TOMBSTONES:
            self._deleted.popitem(last=False)

    def shareable(self, name: str, digest: str) -> bool:
        """May a HEAD miss copy the blob into `name` from elsewhere? Not if it was deleted from `name` here."""
        return (name, digest) not in self._deleted

    def copied_blob(self, name: str, digest: str, source: str) -> None:
        """The blob was just copied into `name` from `source`: known to be there, with the source's size if known
        (else a HEAD asks for it when someone needs it)."""
        seen = self._repository(source).blobs.seen.get(digest)
        objects = self._repository(name).blobs
        objects.seen[digest] = _Seen(seen.size if seen else None, self.clock(), written=True)
        if objects.summary is not None:
            objects.summary.add(digest)
        self._deleted.pop((name, digest), None)

    def holders(self, digest: str) -> list[str]:
        """Repositories this process knows to hold the blob right now (longest known first)."""
        holders = []
        for name, repository in self._repositories.items():
            seen = repository.blobs.seen.get(digest)
            if seen is not None and self.fresh(seen.at, LISTING_TTL_S):
                holders.append(name)
        return holders

    # answering a client ---------------------------------------------------------------------------------------

    async def size(self, name: str, kind: Kind, reference: str) -> int | None:
        """The object's size if it is in the bucket, None if not; from memory where the rule allows, else asked."""
        if self.horizon() == math.inf:  # a gc run is on: only the store knows
            return await self._head(name, kind, reference)
        objects = self._repository(name).of(kind)
        answer = self._recall(name, kind, objects, reference)
        if answer is _UNKNOWN and not objects.too_big and reference not in objects.seen:
            await self.warm(name)  # a push asks next about the other kind (its manifest, tags): one round trip
            answer = self._recall(name, kind, objects, reference)
        if answer is _UNKNOWN and objects.too_big and kind is Kind.BLOB and reference not in objects.seen:
            await self._read_summary(name, objects)
            answer = self._recall(name, kind, objects, reference)
        return await self._head(name, kind, reference) if answer is _UNKNOWN else answer  # type: ignore[return-value]

    def _recall(self, name: str, kind: Kind, objects: _Objects, reference: str) -> int | object | None:
        """The size from memory, None for "absent", or _UNKNOWN (never seen, seen too long ago, size not known)."""
        seen = objects.seen.get(reference)
        if seen is not None and self.fresh(seen.at, LISTING_TTL_S):
            return seen.size if seen.size is not None else _UNKNOWN
        if seen is None and self.fresh(objects.listed_at, LISTING_TTL_S):
            return self._published_since_listing(name, kind, reference, objects.listed_at)
        if (
            seen is None
            and objects.summary is not None
            and self.fresh(objects.summarised_at, LISTING_TTL_S)
            and reference not in objects.summary
        ):
            return self._published_since_listing(name, kind, reference, objects.summarised_at)
        return _UNKNOWN

    def _published_since_listing(self, name: str, kind: Kind, reference: str, listed_at: float) -> int | None:
        """A listing says "absent": unless a process sharing the staging disk has put the blob there since."""
        if kind is not Kind.BLOB or self.staging is None:
            return None
        found = self.staging.recently_published(name, reference)
        return found[0] if found is not None and self._evidence_counts(found[1]) else None

    def _evidence_counts(self, at: float) -> bool:
        return at > self.horizon() and at > self.started

    async def warm(self, name: str) -> None:
        """List the repository's blobs and manifests and read its tags list (together: one round trip)."""
        repository = self._repository(name)
        listings = [self._list(name, kind, repository.of(kind)) for kind in Kind]
        await asyncio.gather(*listings, self._read_tags(name, repository))

    # blob summaries (app/registry/blob_summaries.py) ------------------------------------------------------------

    def blobs_too_big(self, name: str) -> bool:
        """Are the repository's blobs known to fill a listing page (a repository with a summary)?"""
        return self._repository(name).blobs.too_big

    async def blob_summary(self, name: str) -> blob_summaries.Summary | None:
        """The summary to write: the one stored (read again unless fresh) with this process's writes, or None
        when none is stored."""
        objects = self._repository(name).blobs
        await self._read_summary(name, objects)
        return None if objects.summary is None else objects.summary.copy()

    def learn_blob_summary(self, name: str, summary: blob_summaries.Summary, at: float) -> blob_summaries.Summary:
        """A summary read or listed at `at`, with what memory held and this process's own writes: what one writer
        left out (racing another), the next rewrite after a read puts back. A prefix too many is only a "maybe"."""
        objects = self._repository(name).blobs
        objects.summary = summary | objects.written() | (objects.summary or blob_summaries.Summary())
        objects.summarised_at = at
        return objects.summary.copy()

    async def _read_summary(self, name: str, objects: _Objects) -> None:
        """Read the summary unless it is fresh or was read since this was asked (one read for concurrent HEADs).
        A missing one is remembered as missing for as long (the next commit's rewrite lists the repository)."""
        requested = self.clock()
        async with objects.summary_lock:
            if objects.summarised_at >= requested or self.fresh(objects.summarised_at, LISTING_TTL_S):
                return
            started = self.clock()
            found = await run(self.storage.read_small, layout.blob_summary(name))
            summary = blob_summaries.Summary.decode(found[0]) if found else None
            if summary is None:
                objects.summary, objects.summarised_at = None, started
            else:
                self.learn_blob_summary(name, summary, started)

    # vouching for a manifest's references ----------------------------------------------------------------------

    def vouched(self, name: str, kind: Kind, reference: str) -> bool:
        """May a manifest naming this object be published (or the object not be written) without asking?"""
        if self.deletes_enabled:
            return False
        seen = self._repository(name).of(kind).seen.get(reference)
        if seen is not None and (
            self.fresh(seen.at, EVIDENCE_TRUST_S) or (seen.written and self.fresh(seen.at, WRITE_TRUST_S))
        ):
            return True
        return kind is Kind.BLOB and self.published_elsewhere(name, reference)  # a write by a replica beside us

    def published_elsewhere(self, name: str, digest: str) -> bool:
        """Did a process sharing the staging disk put this blob in `name` since the horizon (and deletes are off)?"""
        if self.deletes_enabled or self.staging is None:
            return False
        found = self.staging.recently_published(name, digest)
        return found is not None and self._evidence_counts(found[1])

    async def check(self, name: str, blobs: Iterable[Descriptor], children: Iterable[Descriptor]) -> Checked:
        """Which of these blobs and child manifests are not in the repository, or not of the size declared.

        Memory answers what it can vouch for (and knows the size of); the rest is checked against the store now:
        a few HEADs, or one listing per kind when there are many (a manifest may name thousands of layers).
        Stops at the first batch of HEADs that finds one missing.
        """
        wanted = {(Kind.BLOB, d.digest): d.size for d in blobs} | {(Kind.MANIFEST, d.digest): d.size for d in children}
        sizes: dict[tuple[Kind, str], int | None] = {}
        for reference in wanted:
            sizes[reference] = self._vouched_size(name, *reference)
        unvouched = [reference for reference, size in sizes.items() if size is None]
        repository = self._repository(name)
        if len(unvouched) <= MAX_HEADS or any(repository.of(kind).too_big for kind, _ in unvouched):
            sizes |= await self._check_by_head(name, unvouched)
        else:
            for kind in {kind for kind, _ in unvouched}:
                await self._list(name, kind, repository.of(kind), force=True)
            for kind, ref in unvouched:
                seen = repository.of(kind).seen.get(ref)
                sizes[(kind, ref)] = None if seen is None else (UNKNOWN_SIZE if seen.size is None else seen.size)
        missing = [ref for (kind, ref) in unvouched if (kind, ref) in sizes and sizes[(kind, ref)] is None]
        if missing:
            return Checked(missing=missing)
        stored = {reference: sizes.get(reference) for reference in wanted}
        wrong = [(ref, declared, stored[(kind, ref)]) for (kind, ref), declared in wanted.items()]
        return Checked(wrong_sizes=[(r, d, s) for r, d, s in wrong if s not in (None, UNKNOWN_SIZE) and s != d])

    def _vouched_size(self, name: str, kind: Kind, reference: str) -> int | None:
        if not self.vouched(name, kind, reference):
            return None
        seen = self._repository(name).of(kind).seen.get(reference)
        if seen is not None and seen.size is not None:
            return seen.size
        found = self.staging.recently_published(name, reference) if self.staging else None
        return found[0] if found is not None else None

    async def _check_by_head(self, name: str, references: list[tuple[Kind, str]]) -> dict[tuple[Kind, str], int | None]:
        """HEAD each, a batch at a time, up to the first batch that finds one missing (later ones are left out)."""
        found: dict[tuple[Kind, str], int | None] = {}
        for start in range(0, len(references), HEAD_CONCURRENCY):
            batch = references[start : start + HEAD_CONCURRENCY]
            sizes = await asyncio.gather(*(self._head(name, kind, ref) for kind, ref in batch))
            found |= dict(zip(batch, sizes, strict=True))
            if None in sizes:
                break
        return found

    # derived documents ---------------------------------------------------------------------------------------

    def tags_document(self, name: str) -> Document | None:
        """`tags/list` as last read or written here, when the rule lets it count (None: read it)."""
        document = self._repository(name).tags
        if document is None or self.deletes_enabled or not self.fresh(document.at, DOCUMENT_TRUST_S):
            return None
        return document

    def learn_tags_document(self, name: str, document: Document) -> None:
        repository = self._repository(name)
        if not _older(document, repository.tags):
            repository.tags = document

    def adopt_tags_document(self, name: str, shared: Document | None) -> None:
        """A version of `tags/list` a process sharing the staging disk wrote counts as this process's own, when it
        is newer and the rule lets staging evidence count."""
        repository = self._repository(name)
        if self._adoptable(shared, repository.tags):
            repository.tags = shared

    def adopt_catalog(self, shared: Document | None) -> None:
        if self._adoptable(shared, self.catalog):
            self.catalog = shared

    def _adoptable(self, shared: Document | None, own: Document | None) -> bool:
        return shared is not None and self._evidence_counts(shared.at) and (own is None or shared.at > own.at)

    def catalog_document(self) -> Document | None:
        catalog = self.catalog
        if catalog is None or self.deletes_enabled or not self.fresh(catalog.at, DOCUMENT_TRUST_S):
            return None
        return catalog

    def learn_catalog(self, document: Document) -> None:
        if not _older(document, self.catalog):
            self.catalog = document

    async def _read_tags(self, name: str, repository: _Repository) -> None:
        """Read `tags/list` unless it is known, or was read since this was asked (one read for concurrent HEADs)."""
        requested = self.clock()
        async with repository.tags_lock:
            if self.tags_document(name) is not None or repository.tags_read_at >= requested:
                return
            started = self.clock()
            key = layout.tags_list(name)
            conditional = await run(getattr, self.storage, "conditional_overwrite")
            listing = None if conditional else asyncio.ensure_future(run(versions.listed, self.storage, key))
            found = await run(self.storage.read_small, key)
            tags = frozenset(tags_in(found[0]) if found else [])
            if listing is None:  # its version: the ETag with If-Match, else the number of the version it holds
                self.learn_tags_document(name, Document(tags, found[1].etag if found else None, started))
            else:
                self.learn_tags_document(name, Document(tags, None, started, versions.holding(await listing, found)))
            repository.tags_read_at = started

    # location records (hints for sharing a blob on a HEAD miss) -------------------------------------------------

    def record_may_exist(self, digest: str) -> bool:
        """Is there (as far as the last listing and this process's own writes tell) a record for `digest`?"""
        return digest in self._records or digest in self._records_written

    def records_stale(self) -> bool:
        return not self.fresh(self._records_listed_at, RECORDS_TTL_S)

    def learn_records(self, digests: set[str], at: float) -> None:
        self._records = digests
        self._records_written -= digests  # kept only until a listing shows them, so the set stays small
        self._records_listed_at = at

    def wrote_record(self, digest: str) -> None:
        self._records_written.add(digest)

    def record_missing(self, digest: str) -> None:
        self._records.discard(digest)
        self._records_written.discard(digest)

    # asking the store ------------------------------------------------------------------------------------------

    async def ask(self, name: str, kind: Kind, reference: str) -> int | None:
        """The store's answer now, whatever memory says (it is learnt)."""
        return await self._head(name, kind, reference)

    async def _head(self, name: str, kind: Kind, reference: str) -> int | None:
        key = layout.blob(name, reference) if kind is Kind.BLOB else layout.manifest(name, reference)
        started = self.clock()
        info = await run(self.storage.stat, key)
        objects = self._repository(name).of(kind)
        if info is None:
            objects.seen.pop(reference, None)
            return None
        objects.seen[reference] = _Seen(info.size, started)
        return info.size

    async def _list(self, name: str, kind: Kind, objects: _Objects, *, force: bool = False) -> None:
        """Replace what is known of one kind of the repository's objects by a listing (one at a time)."""
        requested = self.clock()
        async with objects.lock:
            if objects.listed_at >= requested or (not force and self.fresh(objects.listed_at, LISTING_TTL_S)):
                return  # listed meanwhile, or fresh enough
            started = self.clock()
            prefix = layout.blobs_dir(name) if kind is Kind.BLOB else layout.manifests_dir(name)
            listed = await run(self._list_at_most, prefix, MAX_LISTING_PAGES if force else WARM_LISTING_PAGES)
            if listed is None:
                objects.too_big = True
                return
            written_since = {ref: seen for ref, seen in objects.seen.items() if seen.written and seen.at >= started}
            objects.seen = {ref: _Seen(size, started) for ref, size in listed} | written_since
            objects.listed_at = started

    def _list_at_most(self, prefix: str, pages: int) -> list[tuple[str, int]] | None:
        """The children of `prefix` with their sizes, or None when they fill `pages` pages (the next page is not
        asked for: a repository of exactly that many is taken as one of more)."""
        listed = []
        for child in self.storage.list_children_sized(prefix):
            listed.append(child)
            if len(listed) >= pages * LISTING_PAGE:
                return None
        return listed

    def _repository(self, name: str) -> _Repository:
        repository = self._repositories.pop(name, None) or _Repository()
        self._repositories[name] = repository
        while len(self._repositories) > MAX_REPOSITORIES:
            self._repositories.popitem(last=False)
        return repository


@dataclass(frozen=True)
class Checked:
    """What a manifest's references lack: absent digests, or (digest, declared size, stored size) mismatches."""

    missing: list[str] = field(default_factory=list)
    wrong_sizes: list[tuple[str, int, int]] = field(default_factory=list)


def tags_in(document: bytes) -> list[str]:
    """The tags a stored `tags/list` names (a damaged one names none: the rebuild writes it whole)."""
    try:
        tags = json.loads(document).get("tags") or []
    except (ValueError, AttributeError):
        return []
    return [tag for tag in tags if isinstance(tag, str)]


_UNKNOWN = object()


def _older(document: Document, known: Document | None) -> bool:
    """Is `document` an older version of the chain than the one known (learnt after it, out of order)?"""
    return known is not None and None not in (document.version, known.version) and document.version < known.version  # type: ignore[operator]
