"""The catalog page: a static web app stored at the root of the bucket's prefix, beside `v2/`.

Linksharing serves `<root>index.html` at `/`, so the bucket's own address shows the registry in a browser with no
server running; the page (app/web/) reads only the static documents a push already writes. Its assets are stored
under content-hashed names (cached forever) and `index.html` (`no-cache`) names the current ones.

The service writes this version's page once per process, at start-up: one read when the stored page is already
these bytes, otherwise the assets then the page, so a stored page never names an asset that is not there yet.
A push never touches it. `storj-registry fsck --repair` restores it.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import importlib.resources
import logging
from dataclasses import dataclass
from functools import cache

from anyio.to_thread import run_sync as run

from app import layout
from app.storage import ObjectInfo, Storage

PAGE_TYPE = "text/html; charset=utf-8"
ASSET_TYPES = {"style.css": "text/css; charset=utf-8", "app.js": "text/javascript; charset=utf-8"}
GENERATOR = '<meta name="generator" content="storj-registry">'
DISTRIBUTION = "storj-registry"

log = logging.getLogger("storj_registry")


@dataclass(frozen=True)
class PageObject:
    key: str
    body: bytes
    content_type: str
    cache_control: str

    def matches(self, body: bytes, info: ObjectInfo) -> bool:
        return body == self.body and info.content_type == self.content_type and info.cache_control == self.cache_control


def version() -> str:
    """The installed package's version, stamped into the page so that an upgrade rewrites it."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unreleased"


@cache
def page_objects() -> tuple[PageObject, ...]:
    """This version's page: the assets under hashed names, then `index.html` naming them, in writing order."""
    web = importlib.resources.files("app") / "web"
    html = (web / "index.html").read_text(encoding="utf-8")
    objects = []
    for filename, content_type in ASSET_TYPES.items():
        body = (web / filename).read_bytes()
        key = layout.page_asset(hashed_name(filename, body))
        html = replace_once(html, f'"{filename}"', f'"{key}"')
        objects.append(PageObject(key, body, content_type, layout.MANIFEST_CACHE_IMMUTABLE))
    html = replace_once(html, GENERATOR, f'<meta name="generator" content="{DISTRIBUTION} {version()}">')
    objects.append(PageObject(layout.PAGE, html.encode(), PAGE_TYPE, layout.MUTABLE_CACHE))
    return tuple(objects)


def hashed_name(filename: str, body: bytes) -> str:
    """`app.js` -> `app.<16 hex of its sha256>.js`: a new name whenever the bytes change."""
    stem, _, suffix = filename.rpartition(".")
    return f"{stem}.{hashlib.sha256(body).hexdigest()[:16]}.{suffix}"


def replace_once(text: str, old: str, new: str) -> str:
    """Replace the one occurrence of `old`; the page's source must name each asset exactly once."""
    if text.count(old) != 1:
        raise ValueError(f"app/web/index.html must contain {old} exactly once")
    return text.replace(old, new)


def page_is_current(storage: Storage) -> bool:
    """Whether the stored `index.html` is this version's, exactly (one read)."""
    page = page_objects()[-1]
    found = storage.read_small(page.key)
    return found is not None and page.matches(*found)


def write_page(storage: Storage) -> None:
    for item in page_objects():
        storage.put_bytes(item.key, item.body, item.content_type, item.cache_control)


def publish_page(storage: Storage) -> bool:
    """Write this version's page unless it is stored already; True when it was written."""
    if page_is_current(storage):
        return False
    write_page(storage)
    return True


class CatalogPage:
    """The page in the store, kept at this process's version: checked at most once per process."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.current = False
        self._lock = asyncio.Lock()

    async def ensure(self) -> None:
        """Publish the page unless this process already did (or found it current); concurrent callers wait."""
        if self.current:
            return
        async with self._lock:
            if self.current:
                return
            if await run(publish_page, self.storage):
                log.info("wrote the catalog page (%s %s) at %s", DISTRIBUTION, version(), layout.PAGE)
            self.current = True

    async def read(self, key: str) -> tuple[bytes, ObjectInfo] | None:
        """A stored file of the page (after publishing it, if start-up could not)."""
        await self.ensure()
        return await run(self.storage.read_small, key)
