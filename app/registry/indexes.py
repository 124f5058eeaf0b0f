"""The derived objects of the static layout: `v2/index.html`, tags lists, the catalog, referrers indexes.

Each document is rebuilt from a listing of the truth, never patched in place: a tags list from its repository's
manifest keys, the catalog from one entry object per repository (`layout.catalog_entry`), a referrers index from
one entry object per referrer (`layout.referrer_entry`). Entries are only created or deleted, never
read-modify-written, so nothing a concurrent push adds can be lost with a document overwritten by another writer.

The bucket offers no compare-and-swap (Storj honours only create-only writes), so a writer lists, writes, and
lists again until the listing taken after its write agrees with what it wrote. Whichever writer writes last, in
this process or in another replica, thus checks its document against a listing that includes every change made
before it, and rewrites the document when it missed one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from anyio.to_thread import run_sync as run

from app import layout
from app.registry.formats import OCI_INDEX, Descriptor
from app.registry.references import is_digest
from app.storage import ObjectExists, Storage, StorageFault

VERIFY_ROUNDS = 10
_ENTRY = (layout.OCTET_STREAM, layout.MUTABLE_CACHE)
Truth = TypeVar("Truth")


def tags_document(name: str, tags: list[str]) -> bytes:
    return json.dumps({"name": name, "tags": tags}).encode()


def catalog_document(names: list[str]) -> bytes:
    return json.dumps({"repositories": names}).encode()


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


def converge(
    storage: Storage,
    key: str,
    truth: Callable[[], Truth],
    render: Callable[[Truth], bytes],
    content_type: str,
    guess: Truth | None = None,
    *,
    written: bool = False,
) -> float:
    """Write `render(truth())` at `key` until a look at the truth taken after the write agrees with it.

    A `guess` of the truth (what memory says it is) is written first instead of looking: the look after the write
    corrects a wrong guess, and a right one saves a round trip. `written`: the caller wrote the guess already.
    Returns when the last look started: every change made before then is in the document.
    """
    current = truth() if guess is None else guess
    for round_number in range(VERIFY_ROUNDS):
        if not (written and round_number == 0):
            storage.put_bytes(key, render(current), content_type, layout.MUTABLE_CACHE)
        checked_at = time.monotonic()
        latest = truth()
        if latest == current:
            return checked_at
        current = latest
    raise StorageFault(f"{key} kept changing while it was rebuilt; a retry rebuilds it again")


class Indexes:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._settled: dict[str, float] = {}
        self._index_html_written = False
        # The catalog as this process last read or rebuilt it: a repository in it needs no rebuild.
        self._catalog_guess: set[str] | None = None

    async def ensure_index_html(self) -> None:
        """`v2/index.html` makes a static server answer the `/v2/` ping with 200 (one create-only write per process)."""
        if self._index_html_written:
            return
        async with self._locks[layout.INDEX_HTML]:
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

    async def _rebuild(
        self,
        key: str,
        truth: Callable[[], Truth],
        render: Callable[[Truth], bytes],
        content_type: str,
        guess: Truth | None = None,
    ) -> None:
        """`converge` at `key`, one caller at a time per key.

        A caller whose change predates the final check of a rebuild that settled while it waited is covered by
        that rebuild, which spares Storj a write (it takes about one per second per key) when many pushes to
        one repository finish together.
        """
        requested = time.monotonic()
        async with self._locks[key]:
            if self._settled.get(key, -math.inf) > requested:
                return
            self._settled[key] = await run(converge, self.storage, key, truth, render, content_type, guess)

    # tags -----------------------------------------------------------------------------------------------

    async def tags(self, name: str) -> list[str] | None:
        """The published tags list of a repository, or None when the repository is unknown."""
        found = await run(self.storage.read_small, layout.tags_list(name))
        if found is None:
            return None
        return list(json.loads(found[0]).get("tags") or [])

    async def refresh_tags(self, name: str, guess: set[str] | None = None) -> None:
        truth = partial(list_tags, self.storage, name)
        tags = sorted(guess) if guess is not None else None
        await self._rebuild(layout.tags_list(name), truth, partial(tags_document, name), layout.JSON, tags)

    # catalog --------------------------------------------------------------------------------------------

    async def catalog(self) -> list[str]:
        found = await run(self.storage.read_small, layout.CATALOG)
        if found is None:
            return []
        return list(json.loads(found[0]).get("repositories") or [])

    async def load_catalog(self) -> None:
        """Remember the published catalog (at start): the guess a new repository's catalog rebuild starts from."""
        self._catalog_guess = set(await self.catalog())

    async def add_to_catalog(self, name: str) -> None:
        """Make sure `name` is in the catalog.

        A repository this process already added, or found in the catalog published when it started, costs
        nothing. Any other writes its entry (create-only) and rebuilds the catalog from the guess it keeps, which
        also repairs a catalog that a crash left without an entry's repository.
        """
        if self._catalog_guess is not None and name in self._catalog_guess:
            return
        guess = sorted((self._catalog_guess or set()) | {name})
        async with self._locks[layout.CATALOG]:  # the entry and the guessed catalog together: one round trip
            await asyncio.gather(run(self._write_entry, name), run(self._write_catalog, guess))
            self._settled[layout.CATALOG] = await run(
                partial(converge, written=True),
                self.storage,
                layout.CATALOG,
                self._catalog_truth,
                catalog_document,
                layout.JSON,
                guess,
            )

    def _write_entry(self, name: str) -> None:
        with contextlib.suppress(ObjectExists):
            self.storage.put_bytes(layout.catalog_entry(name), b"", *_ENTRY, if_absent=True)

    def _write_catalog(self, names: list[str]) -> None:
        self.storage.put_bytes(layout.CATALOG, catalog_document(names), layout.JSON, layout.MUTABLE_CACHE)

    def _catalog_truth(self) -> list[str]:
        names = list_catalog(self.storage)
        self._catalog_guess = set(names)
        return names

    # referrers ------------------------------------------------------------------------------------------

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
        truth = partial(list_referrers, self.storage, name, subject)
        await self._rebuild(layout.referrers(name, subject), truth, referrers_document, layout.OCI_INDEX)
