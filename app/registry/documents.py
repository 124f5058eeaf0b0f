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
- **Without it** (Storj does not promise `If-Match`): the writer lists the truth (while a push writes the keys
  it adds, so the listing costs no round trip on its path), writes, and lists again until the listing taken
  after its write agrees with what it wrote. Whichever writer writes last checks its
  document against a listing that includes every change made before, so nothing is lost for longer than a
  writer's own round trips; nothing from memory is written (a guess could be seconds old).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from anyio.to_thread import run_sync as run

from app import layout
from app.registry.beliefs import Beliefs, Document, tags_in
from app.registry.formats import OCI_INDEX, Descriptor
from app.registry.keyed_locks import KeyedLocks
from app.registry.references import is_digest
from app.registry.staging import Staging
from app.storage import ObjectExists, Storage, StorageFault
from app.storage.base import PreconditionFailed

ROUNDS = 10
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


def tags_kind(storage: Storage, name: str) -> Kind:
    return Kind(
        layout.tags_list(name),
        lambda: list_tags(storage, name),
        lambda tags: tags_document(name, tags),
        layout.JSON,
        tags_in,
    )


def catalog_kind(storage: Storage) -> Kind:
    return Kind(layout.CATALOG, lambda: list_catalog(storage), catalog_document, layout.JSON, _repositories_in)


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
    return _converge(storage, kind)


def add(
    storage: Storage,
    kind: Kind,
    entries: Iterable[str],
    known: Document | None = None,
    listed: list[str] | None = None,
) -> Document:
    """Make sure the document names `entries` (their keys are written already); `known`: the version remembered;
    `listed`: the truth listed while the entries' keys were being written (without If-Match: saves a round trip)."""
    wanted = set(entries)
    if storage.conditional_overwrite:
        return _swap(storage, kind, lambda current: sorted(set(current) | wanted), known)
    return _converge(storage, kind, None if listed is None else sorted(set(listed) | wanted))


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
    entries = kind.entries_of(found[0]) if kind.entries_of else _index_entries(found[0])
    return sorted(entries, key=_entry_key), found[1].etag


def _converge(storage: Storage, kind: Kind, listed: list[Any] | None = None) -> Document:
    """List the truth (unless `listed` is a listing just taken), write it, and list again until the listing after
    the write agrees with it."""
    current = kind.truth() if listed is None else listed
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

        Without If-Match, the truth is listed while the keys are written, not after: one round trip fewer on
        the push's path (the entries being written are added to the listing).
        """
        tags = set(tags)
        listing = None
        if not self.storage.conditional_overwrite and not self.tags_listed(name, tags):
            listing = asyncio.ensure_future(run(list_tags, self.storage, name))
            listing.add_done_callback(lambda done: done.cancelled() or done.exception())  # retrieved, if unused
        try:
            yield
            await self.add_tags(name, tags, None if listing is None else await listing)
        finally:
            if listing is not None and not listing.done():
                listing.cancel()

    async def add_tags(self, name: str, tags: Iterable[str], listed: list[str] | None = None) -> None:
        """The tags (their keys written) are in `tags/list` when this returns; nothing is written when they were.

        Pushes of one repository that finish together are written together: each adds its tags to the pending
        ones, and whichever holds the document's lock writes them all (Storj takes about one write a second to
        a key; one write instead of many also spares replicas' conflicting versions).
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
            document = await run(add, self.storage, tags_kind(self.storage, name), batch, known, listed)
            self.beliefs.learn_tags_document(name, document.entries, document.etag, document.at)
            await self._share(key, document)

    async def rebuild_tags(self, name: str) -> None:
        key = layout.tags_list(name)
        async with self._turn(key):
            document = await run(rebuild, self.storage, tags_kind(self.storage, name))
            self.beliefs.learn_tags_document(name, document.entries, document.etag, document.at)
            await self._share(key, document)

    # catalog -------------------------------------------------------------------------------------------------

    async def catalog(self) -> list[str]:
        found = await run(self.storage.read_small, layout.CATALOG)
        return [] if found is None else _repositories_in(found[0])

    async def load_catalog(self) -> None:
        """Remember the published catalog (at start), and its version: a new repository's write names it."""
        started = time.time()
        found = await run(self.storage.read_small, layout.CATALOG)
        names = _repositories_in(found[0]) if found else []
        self.beliefs.learn_catalog(names, found[1].etag if found else None, started)

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
            listed = None
            if self.storage.conditional_overwrite:
                await run(self._write_entry, name)
            else:  # the truth listed while the entry is written: one round trip fewer
                _, listed = await asyncio.gather(run(self._write_entry, name), run(list_catalog, self.storage))
            document = await run(add, self.storage, catalog_kind(self.storage), [name], known, listed)
            self.beliefs.learn_catalog(document.entries, document.etag, document.at)
            await self._share(layout.CATALOG, document)

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
