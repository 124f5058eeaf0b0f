"""The derived documents of the static layout: `v2/index.html`, tags lists, the catalog, referrers indexes.

A document is derived from the truth, which is keys: a tags list from the repository's tag keys, the catalog from
one entry object per repository (`layout.catalog_entry`), a referrers index from one entry object per referrer
(`layout.referrer_entry`). Entries are only created or deleted. The service, `fsck` and `gc` change a document
through the one function here for each kind of change: `add` (a push adds an entry) and `rebuild` (rebuilt from
the truth: after deletes, in fsck and gc, for referrers).

Many writers (pushes, replicas, gc) change one document, and a stale writer must never replace a fresher
document. How, depends on the store:
- **Conditional overwrite** (`Storage.conditional_overwrite`: the filesystem store, SeaweedFS, AWS): every write
  names the version it read (`If-Match`, or `If-None-Match: *` when there was none) and starts again when another
  writer got there first. A writer adding one entry needs no listing: the version it read plus its entry is the
  truth, since every writer does the same. One request when the version is remembered (app/registry/beliefs.py).
- **Without it** (Storj does not promise `If-Match`), tags lists and the catalog keep a *chain of versions*
  (`layout.document_version`): version n+1 is written create-only, so of two writers building on version n one
  wins and the other reads n+1 and builds on that; then the document itself is written. After its write, a writer
  looks for the next version (`follow`): one that came after may have written its document before this one's
  landed, and then this writer writes the newest version's document again. So a version names every entry added
  before it, the document ends as the newest version, and nothing is listed: a push costs the same requests in a
  repository of 10 tags or 5,000, and a new repository among 10 or 5,000. The chain keeps its last KEEP_VERSIONS
  versions; the first write of a document without one (a bucket from before) starts it from a listing of the
  truth, as `rebuild` (after deletes, in fsck and gc) does. Referrers indexes, small and rebuilt whole, are listed
  before and after their write instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

from anyio.to_thread import run_sync as run

from app import layout
from app.registry import versions
from app.registry.beliefs import Beliefs, Document, tags_in
from app.registry.formats import OCI_INDEX, Descriptor
from app.registry.keyed_locks import KeyedLocks
from app.registry.references import is_digest
from app.registry.staging import Staging
from app.storage import ObjectExists, ObjectInfo, Storage, StorageFault
from app.storage.base import PreconditionFailed

log = logging.getLogger("storj_registry")

ROUNDS = 10
KEEP_VERSIONS = 8  # of a document's chain (a fresh process lists them to find the newest)
SMALL_DOCUMENT = 500  # entries: the truth of a document this small is one page of a listing
_ENTRY = (layout.OCTET_STREAM, layout.MUTABLE_CACHE)


def tags_document(name: str, tags: Iterable[str]) -> bytes:
    return json.dumps({"name": name, "tags": sorted(tags)}).encode()


def catalog_document(names: Iterable[str]) -> bytes:
    return json.dumps({"repositories": sorted(names)}).encode()


def empty_index() -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}


def referrers_document(descriptors: list[dict[str, Any]]) -> bytes:
    return json.dumps({**empty_index(), "manifests": descriptors}).encode()


def list_tags(storage: Storage, name: str) -> list[str]:
    """The truth of a tags list: the tag keys among the repository's manifests, sorted."""
    return sorted(child for child in storage.list_children(layout.manifests_dir(name)) if not is_digest(child))


def list_catalog(storage: Storage) -> list[str]:
    """The truth of the catalog: the names of the catalog entries, sorted (listings come unordered)."""
    names = (layout.name_from_catalog_entry(key) for key in storage.list(layout.CATALOG_ENTRIES))
    return sorted(name for name in names if name)


def list_referrers(storage: Storage, name: str, subject: str) -> list[dict[str, Any]]:
    """The truth of a referrers index: the descriptors held by the subject's referrer entries, by digest."""
    descriptors = []
    for key in sorted(storage.list(layout.referrer_entries(name, subject))):
        found = storage.read_small(key)
        if found is not None:  # None: deleted since the listing
            descriptors.append(json.loads(found[0]))
    return descriptors


@dataclass(frozen=True)
class Kind:
    """One kind of derived document: where it is, what it is derived from, how it is written."""

    key: str
    truth: Callable[[], list[Any]]
    render: Callable[[list[Any]], bytes]
    content_type: str
    entries_of: Callable[[bytes], list[Any]] | None = None  # a stored document's entries, for `add`
    chained: bool = False  # without If-Match: versions written create-only (else listed before and after)
    present: Callable[[Any], bool] | None = None  # is an entry's key there (a chained document's check)


def tags_kind(storage: Storage, name: str) -> Kind:
    return Kind(
        layout.tags_list(name),
        lambda: list_tags(storage, name),
        lambda tags: tags_document(name, tags),
        layout.JSON,
        tags_in,
        chained=True,
        present=lambda tag: storage.stat(layout.manifest(name, tag)) is not None,
    )


def catalog_kind(storage: Storage) -> Kind:
    return Kind(
        layout.CATALOG,
        lambda: list_catalog(storage),
        catalog_document,
        layout.JSON,
        _repositories_in,
        chained=True,
        present=lambda name: storage.stat(layout.catalog_entry(name)) is not None,
    )


def referrers_kind(storage: Storage, name: str, subject: str) -> Kind:
    return Kind(
        layout.referrers(name, subject),
        lambda: list_referrers(storage, name, subject),
        referrers_document,
        layout.OCI_INDEX,
    )


def rebuild(storage: Storage, kind: Kind) -> Document:
    """Write the document derived from the truth now; a stale writer never replaces a fresher one (see above)."""
    if storage.conditional_overwrite:
        return _swap(storage, kind, lambda _current: kind.truth())
    if not kind.chained:
        return _converge(storage, kind)
    before = latest_version(storage, kind)
    truth = kind.truth()
    known = {_entry_key(entry) for entry in before.entries} if before else set()

    def rebuilt(newest: list[Any]) -> list[Any]:  # the truth, and what writers added since it was listed
        return _union(truth, [entry for entry in newest if _entry_key(entry) not in known])

    document = append(storage, kind, rebuilt, before, always=True)
    return follow(storage, kind, document)


def add(storage: Storage, kind: Kind, entries: Iterable[str], known: Document | None = None) -> Document:
    """Make sure the document names `entries` (their keys are written already); `known`: the version remembered."""
    wanted = set(entries)
    if storage.conditional_overwrite:
        return _swap(storage, kind, partial(_grown, wanted), known)
    document = append(storage, kind, partial(_grown, wanted), _version_of(known))
    return follow(storage, kind, document)


def _swap(
    storage: Storage, kind: Kind, change: Callable[[list[Any]], list[Any]], known: Document | None = None
) -> Document:
    """Read (or take `known`), change, write naming the version read; again when another writer came first."""
    for _ in range(ROUNDS):
        started = time.time()
        if known is not None:
            current, etag, known = sorted(known.entries), known.etag, None
        else:
            current, etag = _read(storage, kind)
        wanted = change(current)
        if _same(wanted, current) and etag is not None:
            return Document(frozenset(map(_entry_key, wanted)), etag, started)
        try:
            written = storage.put_bytes(
                kind.key,
                kind.render(wanted),
                kind.content_type,
                layout.MUTABLE_CACHE,
                if_absent=etag is None,
                if_match=etag,
            )
        except PreconditionFailed:
            continue
        return Document(frozenset(map(_entry_key, wanted)), written or storage.stat(kind.key).etag, started)  # type: ignore[union-attr]
    raise StorageFault(f"{kind.key} kept changing while it was rewritten; a retry writes it again")


def _read(storage: Storage, kind: Kind) -> tuple[list[Any], str | None]:
    found = storage.read_small(kind.key)
    if found is None:
        return [], None
    return _entries(kind, found[0]), found[1].etag


def _entries(kind: Kind, document: bytes) -> list[Any]:
    entries = kind.entries_of(document) if kind.entries_of else _index_entries(document)
    return sorted(entries, key=_entry_key)


# the chain of versions (no If-Match) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Version:
    number: int  # 0: no chain yet (the entries are a listing of the truth)
    entries: list[Any]


def latest_version(storage: Storage, kind: Kind, document: tuple[bytes, ObjectInfo] | None = None) -> Version | None:
    """The newest version of the chain, or None when it has none: one listing of its few keys, and one read
    unless `document` (the document as just read) holds that version's bytes."""
    return _newest(storage, kind, versions.listed(storage, kind.key), document)


def _newest(
    storage: Storage, kind: Kind, listing: versions.Listing, document: tuple[bytes, ObjectInfo] | None
) -> Version | None:
    number = versions.holding(listing, document)
    if number is not None and document is not None:
        return Version(number, _entries(kind, document[0]))
    for number, _ in listing:
        body = versions.read(storage, kind.key, number)
        if body is not None:  # else pruned since the listing: the one before is newer than any pruned
            return Version(number, _with_unchained(kind, _entries(kind, body), document))
    return None


def _with_unchained(kind: Kind, entries: list[Any], document: tuple[bytes, ObjectInfo] | None) -> list[Any]:
    """The newest version's entries, and those of the document that no version names but whose keys are there.

    A document that does not hold the newest version is usually an older one (a later write has not landed yet):
    it names nothing more. Where it does, either an entry was deleted since (its key is gone: left out), or a
    process that writes no chain (a replica of an earlier version, during a rolling upgrade) added it after the
    chain's newest version: kept, so the next version does not drop it. One HEAD per such entry."""
    if document is None or kind.present is None:
        return entries
    named = {_entry_key(entry) for entry in entries}
    unchained = [entry for entry in _entries(kind, document[0]) if _entry_key(entry) not in named]
    return _union(entries, [entry for entry in unchained if kind.present(entry)])


def base_version(storage: Storage, kind: Kind, *, small: bool = False, read_document: bool = True) -> Version:
    """The version a writer that remembers none builds on, in one round trip: the chain's newest (the document
    read at the same time usually is it), or, with no chain yet (a new document, or a bucket from before chains),
    the truth listed. `small`: a document known to have few entries, whose truth is listed at the same time in
    case there is no chain; `read_document`: False when the document is known to be absent or behind."""
    with ThreadPoolExecutor(3) as pool:
        listing = pool.submit(versions.listed, storage, kind.key)
        document = pool.submit(storage.read_small, kind.key) if read_document else None
        truth = pool.submit(kind.truth) if small else None
        newest = _newest(storage, kind, listing.result(), document.result() if document else None)
        if newest is not None:
            return newest
        return Version(0, truth.result() if truth else kind.truth())


def append(
    storage: Storage,
    kind: Kind,
    change: Callable[[list[Any]], list[Any]],
    known: Version | None = None,
    *,
    always: bool = False,
) -> Document:
    """Write the next version (create-only: of two writers one wins, the other builds on the winner's), then the
    document. `known`: the newest version remembered (else read); nothing is written when the change changes
    nothing, unless `always`. The Document's `version` is the number written; `follow` it then."""
    current = known or base_version(storage, kind)
    for _ in range(ROUNDS):
        started = time.time()
        wanted = change(current.entries)
        if current.number and not always and _same(wanted, current.entries):
            return Document(frozenset(map(_entry_key, wanted)), None, started, current.number)
        number = current.number + 1
        body = kind.render(wanted)
        try:
            storage.put_bytes(layout.document_version(kind.key, number), body, kind.content_type, if_absent=True)
        except ObjectExists:
            current = _read_version(storage, kind, number) or latest_version(storage, kind) or current
            continue
        storage.put_bytes(kind.key, body, kind.content_type, layout.MUTABLE_CACHE)
        return Document(frozenset(map(_entry_key, wanted)), None, started, number)
    raise StorageFault(f"{kind.key} kept changing while it was rewritten; a retry writes it again")


def follow(storage: Storage, kind: Kind, document: Document) -> Document:
    """After the write of version `document.version`: if later versions exist, one of them may have written its
    document before this one landed, so write the newest version's document again (and look again). Then prune
    the version KEEP_VERSIONS older. Returns the version the document ends as."""
    number = document.version
    if number is None:
        return document
    written = document
    while (newer := _newest_after(storage, kind, written.version or 0)) is not None:
        storage.put_bytes(kind.key, kind.render(newer.entries), kind.content_type, layout.MUTABLE_CACHE)
        written = Document(frozenset(map(_entry_key, newer.entries)), None, time.time(), newer.number)
    if number > KEEP_VERSIONS:
        storage.delete(layout.document_version(kind.key, number - KEEP_VERSIONS))
    return written


def _newest_after(storage: Storage, kind: Kind, number: int) -> Version | None:
    newest = None
    while (found := _read_version(storage, kind, number + 1)) is not None:
        newest, number = found, number + 1
    return newest


def _read_version(storage: Storage, kind: Kind, number: int) -> Version | None:
    body = versions.read(storage, kind.key, number)
    return None if body is None else Version(number, _entries(kind, body))


def _version_of(known: Document | None) -> Version | None:
    if known is None or known.version is None:
        return None
    return Version(known.version, sorted(known.entries))


def _small(known: Document | None) -> bool:
    """Is the document known (read at start, or at a repository's first question) to have few entries?"""
    return known is not None and len(known.entries) < SMALL_DOCUMENT


def _grown(entries: set[str], current: list[Any]) -> list[Any]:
    return sorted(set(current) | entries)


def _union(first: list[Any], second: list[Any]) -> list[Any]:
    merged = {_entry_key(entry): entry for entry in [*first, *second]}
    return [merged[key] for key in sorted(merged)]


def _converge(storage: Storage, kind: Kind) -> Document:
    """List the truth, write it, and list again until the listing after the write agrees with it."""
    current = kind.truth()
    for _ in range(ROUNDS):
        started = time.time()
        storage.put_bytes(kind.key, kind.render(current), kind.content_type, layout.MUTABLE_CACHE)
        latest = kind.truth()
        if _same(latest, current):
            return Document(frozenset(map(_entry_key, current)), None, started)
        current = latest
    raise StorageFault(f"{kind.key} kept changing while it was rebuilt; a retry rebuilds it again")


def _same(first: list[Any], second: list[Any]) -> bool:
    return sorted(map(_entry_key, first)) == sorted(map(_entry_key, second))


def _entry_key(entry: Any) -> str:
    return entry if isinstance(entry, str) else json.dumps(entry, sort_keys=True)


def _repositories_in(document: bytes) -> list[str]:
    try:
        names = json.loads(document).get("repositories") or []
    except (ValueError, AttributeError):
        return []
    return [name for name in names if isinstance(name, str)]


def _index_entries(document: bytes) -> list[Any]:
    try:
        return list(json.loads(document).get("manifests") or [])
    except (ValueError, AttributeError):
        return []


class Documents:
    """The service's side: documents changed as pushes and deletes go, one writer per document in this process."""

    def __init__(self, storage: Storage, beliefs: Beliefs, staging: Staging | None = None) -> None:
        self.storage = storage
        self.beliefs = beliefs
        self.staging = staging  # processes sharing it take turns at each document (app/registry/staging.py)
        self._locks = KeyedLocks()
        self._index_html_written = False
        self._pending_tags: dict[str, set[str]] = {}  # tags waiting for a repository's tags/list, written together
        self._following: set[asyncio.Task[None]] = set()  # `follow` after a write, behind the answer

    # v2/index.html -----------------------------------------------------------------------------------------

    async def ensure_index_html(self) -> None:
        """`v2/index.html` makes a static server answer the `/v2/` ping with 200 (one create-only write per process)."""
        if self._index_html_written:
            return
        async with self._locks.hold(layout.INDEX_HTML):
            if not self._index_html_written:
                with contextlib.suppress(ObjectExists):
                    await run(self._put_index_html)
            self._index_html_written = True

    async def check_index_html(self) -> None:
        """Learn (one read, at start) whether `v2/index.html` is there, so that no push has to write it."""
        if await run(self.storage.stat, layout.INDEX_HTML) is not None:
            self._index_html_written = True

    def _put_index_html(self) -> None:
        self.storage.put_bytes(layout.INDEX_HTML, b"", layout.HTML, layout.MUTABLE_CACHE, if_absent=True)

    # tags ----------------------------------------------------------------------------------------------------

    async def tags(self, name: str) -> list[str] | None:
        """The published tags list of a repository, or None when the repository is unknown."""
        found = await run(self.storage.read_small, layout.tags_list(name))
        return None if found is None else tags_in(found[0])

    def tags_listed(self, name: str, tags: Iterable[str]) -> bool:
        """Does `tags/list`, as memory may tell, name these tags already?"""
        known = self.beliefs.tags_document(name)
        return known is not None and set(tags) <= known.entries

    @contextlib.asynccontextmanager
    async def adding_tags(self, name: str, tags: Iterable[str]) -> AsyncIterator[None]:
        """Around the writes of tag keys: the tags are in `tags/list` when this ends (nothing written if they were).

        Without If-Match, a process that does not know the chain's newest version reads it while the keys are
        written, not after: no round trip more on the push's path.
        """
        tags = set(tags)
        newest = None
        known = self.beliefs.tags_document(name)
        if not self.tags_listed(name, tags) and self._unversioned(known) and await self._chained():
            kind = tags_kind(self.storage, name)
            read = partial(base_version, self.storage, kind, small=_small(known), read_document=known is None)
            newest = asyncio.ensure_future(run(read))
            newest.add_done_callback(lambda done: done.cancelled() or done.exception())  # retrieved, if unused
        try:
            yield
            await self.add_tags(name, tags, None if newest is None else await newest)
        finally:
            if newest is not None and not newest.done():
                newest.cancel()

    async def add_tags(self, name: str, tags: Iterable[str], newest: Version | None = None) -> None:
        """The tags (their keys written) are in `tags/list` when this returns; nothing is written when they were.

        Pushes of one repository that finish together are written together: each adds its tags to the pending
        ones, and whichever holds the document's lock writes them all (Storj takes about one write a second to
        a key; one write instead of many also spares replicas' conflicting versions). `newest`: the chain's
        newest version, read meanwhile by a process that did not know it.
        """
        tags = set(tags)
        if self.tags_listed(name, tags):
            return
        self._pending_tags.setdefault(name, set()).update(tags)
        key = layout.tags_list(name)
        async with self._turn(key):
            self.beliefs.adopt_tags_document(name, await self._shared(key))
            if self.tags_listed(name, tags):  # a write while this one waited may have added them
                return
            known = self.beliefs.tags_document(name)
            batch = self._pending_tags.pop(name, set()) | tags
            learn = partial(self.beliefs.learn_tags_document, name)
            await self._add(tags_kind(self.storage, name), batch, known, learn, newest)

    async def rebuild_tags(self, name: str) -> None:
        key = layout.tags_list(name)
        async with self._turn(key):
            document = await run(rebuild, self.storage, tags_kind(self.storage, name))
            self.beliefs.learn_tags_document(name, document)
            await self._share(key, document)

    # catalog -------------------------------------------------------------------------------------------------

    async def catalog(self) -> list[str]:
        found = await run(self.storage.read_small, layout.CATALOG)
        return [] if found is None else _repositories_in(found[0])

    async def load_catalog(self) -> None:
        """Remember the published catalog (at start), and its version: a new repository's write names it (its
        ETag with If-Match; without, the number of the chain's version it holds, listed meanwhile)."""
        started = time.time()
        chained = await self._chained()
        listing = asyncio.ensure_future(run(versions.listed, self.storage, layout.CATALOG)) if chained else None
        found = await run(self.storage.read_small, layout.CATALOG)
        names = frozenset(_repositories_in(found[0]) if found else [])
        if listing is None:
            self.beliefs.learn_catalog(Document(names, found[1].etag if found else None, started))
        else:
            self.beliefs.learn_catalog(Document(names, None, started, versions.holding(await listing, found)))

    async def add_to_catalog(self, name: str) -> None:
        """Make sure `name` is in the catalog: its entry (create-only), then the document."""
        known = self.beliefs.catalog_document()
        if known is not None and name in known.entries:
            return
        async with self._turn(layout.CATALOG):
            self.beliefs.adopt_catalog(await self._shared(layout.CATALOG))
            known = self.beliefs.catalog_document()
            if known is not None and name in known.entries:
                return
            kind = catalog_kind(self.storage)
            if self._unversioned(known) and await self._chained():  # read while the entry is written
                read = partial(base_version, self.storage, kind, small=_small(known), read_document=known is None)
                _, newest = await asyncio.gather(run(self._write_entry, name), run(read))
            else:
                newest = None
                await run(self._write_entry, name)
            await self._add(kind, {name}, known, self.beliefs.learn_catalog, newest)

    # writing a document ------------------------------------------------------------------------------------------

    async def _chained(self) -> bool:
        """Without If-Match (learnt once per process: a probe the first time, in a worker thread)."""
        return not await run(getattr, self.storage, "conditional_overwrite")

    @staticmethod
    def _unversioned(known: Document | None) -> bool:
        """Is the chain's newest version unknown here (so to be read)?"""
        return known is None or known.version is None

    async def _add(
        self,
        kind: Kind,
        entries: set[str],
        known: Document | None,
        learn: Callable[[Document], None],
        newest: Version | None = None,
    ) -> None:
        """Add `entries` to the document (its lock held); without If-Match, `follow` goes on behind the answer:
        the entries are in the document once the version's write is done, and following repairs only what a
        slower writer may hide of others' (see the module's docstring)."""
        if not await self._chained():
            document = await run(add, self.storage, kind, entries, known)
        else:
            base = _version_of(known) or newest
            grow = partial(_grown, entries)
            document = await run(append, self.storage, kind, grow, base)
            self._behind(self._follow(kind, document, learn))
        learn(document)
        await self._share(kind.key, document)

    async def _follow(self, kind: Kind, document: Document, learn: Callable[[Document], None]) -> None:
        newest = await run(follow, self.storage, kind, document)
        if newest.version != document.version:
            async with self._locks.hold(kind.key):
                learn(newest)

    def _behind(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._following.add(task)
        task.add_done_callback(self._followed)

    def _followed(self, task: asyncio.Task[None]) -> None:
        self._following.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("a derived document could not be checked after its write: %s", task.exception())

    async def drain(self) -> None:
        """Wait for the checks still going on behind answers (shutdown)."""
        if self._following:
            await asyncio.gather(*self._following, return_exceptions=True)

    @contextlib.asynccontextmanager
    async def _turn(self, key: str) -> AsyncIterator[None]:
        """One writer of the document at `key` in this process, then among the processes sharing the staging disk."""
        between_processes = self.staging.document_turn(key) if self.staging else contextlib.nullcontext()
        async with self._locks.hold(key), between_processes:
            yield

    async def _shared(self, key: str) -> Document | None:
        return await run(self.staging.shared_document, key) if self.staging else None

    async def _share(self, key: str, document: Document) -> None:
        if self.staging:
            await run(self.staging.share_document, key, document)

    def _write_entry(self, name: str) -> None:
        with contextlib.suppress(ObjectExists):
            self.storage.put_bytes(layout.catalog_entry(name), b"", *_ENTRY, if_absent=True)

    # referrers -----------------------------------------------------------------------------------------------

    async def referrers(self, name: str, subject: str) -> dict[str, Any]:
        found = await run(self.storage.read_small, layout.referrers(name, subject))
        return json.loads(found[0]) if found else empty_index()

    async def add_referrer(self, name: str, subject: str, referrer: Descriptor) -> None:
        entry = layout.referrer_entry(name, subject, referrer.digest)
        body = json.dumps(referrer.to_json()).encode()
        await run(self.storage.put_bytes, entry, body, layout.JSON, layout.MUTABLE_CACHE)
        await self._rebuild_referrers(name, subject)

    async def remove_referrer(self, name: str, subject: str, digest: str) -> None:
        await run(self.storage.delete, layout.referrer_entry(name, subject, digest))
        await self._rebuild_referrers(name, subject)

    async def _rebuild_referrers(self, name: str, subject: str) -> None:
        key = layout.referrers(name, subject)
        async with self._locks.hold(key):
            await run(rebuild, self.storage, referrers_kind(self.storage, name, subject))
