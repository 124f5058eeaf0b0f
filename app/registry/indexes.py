"""The derived objects of the static layout: `v2/index.html`, tags lists, the catalog, referrers indexes.

They are rebuilt from the truth rather than patched where that is cheap (a tags list is the listing of its
repository's manifest keys) and verified after writing, so that concurrent pushes, in this process or in
another replica, converge on the truth instead of losing each other's updates.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from typing import Any

from anyio.to_thread import run_sync as run

from app import layout
from app.registry.formats import OCI_INDEX, Descriptor
from app.registry.references import is_digest
from app.storage import Storage

VERIFY_ROUNDS = 5


def tags_document(name: str, tags: list[str]) -> bytes:
    return json.dumps({"name": name, "tags": tags}).encode()


def empty_index() -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}


class Indexes:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._index_html_written = False

    async def ensure_index_html(self) -> None:
        """`v2/index.html` makes a static server answer the `/v2/` ping with 200."""
        if self._index_html_written:
            return
        if await run(self.storage.stat, layout.INDEX_HTML) is None:
            await run(self.storage.put_bytes, layout.INDEX_HTML, b"", layout.HTML, layout.MUTABLE_CACHE)
        self._index_html_written = True

    # tags -----------------------------------------------------------------------------------------------

    def _list_tags(self, name: str) -> list[str]:
        return sorted(child for child in self.storage.list_children(layout.manifests_dir(name)) if not is_digest(child))

    async def tags(self, name: str) -> list[str] | None:
        """The published tags list of a repository, or None when the repository is unknown."""
        found = await run(self.storage.read_small, layout.tags_list(name))
        if found is None:
            return None
        return list(json.loads(found[0]).get("tags") or [])

    async def refresh_tags(self, name: str) -> list[str]:
        """Rewrite `tags/list` from the manifest keys until a listing after the write agrees with it."""
        key = layout.tags_list(name)
        async with self._locks[key]:
            tags = await run(self._list_tags, name)
            for _ in range(VERIFY_ROUNDS):
                await run(self.storage.put_bytes, key, tags_document(name, tags), layout.JSON, layout.MUTABLE_CACHE)
                latest = await run(self._list_tags, name)
                if latest == tags:
                    break
                tags = latest
            return tags

    # catalog --------------------------------------------------------------------------------------------

    async def catalog(self) -> list[str]:
        found = await run(self.storage.read_small, layout.CATALOG)
        if found is None:
            return []
        return list(json.loads(found[0]).get("repositories") or [])

    async def add_to_catalog(self, name: str) -> None:
        await self._edit_catalog(lambda names: names | {name}, lambda names: name in names)

    async def remove_from_catalog(self, name: str) -> None:
        await self._edit_catalog(lambda names: names - {name}, lambda names: name not in names)

    async def _edit_catalog(self, change, done) -> None:
        """Read, change and write the catalog, re-reading to catch a replica that wrote in between."""
        async with self._locks[layout.CATALOG]:
            for _ in range(VERIFY_ROUNDS):
                names = set(await self.catalog())
                if done(names) and await run(self.storage.stat, layout.CATALOG) is not None:
                    return
                document = json.dumps({"repositories": sorted(change(names))}).encode()
                await run(self.storage.put_bytes, layout.CATALOG, document, layout.JSON, layout.MUTABLE_CACHE)

    # referrers ------------------------------------------------------------------------------------------

    async def referrers(self, name: str, subject: str) -> dict[str, Any]:
        found = await run(self.storage.read_small, layout.referrers(name, subject))
        return json.loads(found[0]) if found else empty_index()

    async def add_referrer(self, name: str, subject: str, referrer: Descriptor) -> None:
        def change(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
            kept = [m for m in manifests if m.get("digest") != referrer.digest]
            return [*kept, referrer.to_json()]

        await self._edit_referrers(name, subject, change)

    async def remove_referrer(self, name: str, subject: str, digest: str) -> None:
        await self._edit_referrers(name, subject, lambda manifests: [m for m in manifests if m.get("digest") != digest])

    async def _edit_referrers(self, name: str, subject: str, change) -> None:
        key = layout.referrers(name, subject)
        async with self._locks[key]:
            index = await self.referrers(name, subject)
            index["manifests"] = change(index.get("manifests", []))
            body = json.dumps(index).encode()
            await run(self.storage.put_bytes, key, body, layout.OCI_INDEX, layout.MUTABLE_CACHE)
