"""`/` and `/assets/<file>`: the catalog page, the same bytes the bucket serves, with a strict CSP.

The page is written into the store when the service starts (`publishing_page`, part of the app's lifespan) and
served from there, so the filesystem backend shows what linksharing would show over the bucket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI, Request, Response
from starlette.exceptions import HTTPException

from app import layout
from app.api.deps import RegistryDep
from app.registry.catalog_page import CatalogPage
from app.registry.purging import in_background
from app.storage import StorageFault

START_WAIT_SECONDS = 10.0  # start-up waits this long for the store; a slower store gets the page in the background
ASSET_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

log = logging.getLogger("storj_registry")
router = APIRouter()


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def page(request: Request, registry: RegistryDep) -> Response:
    return await stored_file(request, registry.page, layout.PAGE, registry.settings.public_url)


@router.api_route("/assets/{filename}", methods=["GET", "HEAD"], include_in_schema=False)
async def asset(filename: str, request: Request, registry: RegistryDep) -> Response:
    if not ASSET_NAME_RE.fullmatch(filename):
        raise HTTPException(404)
    return await stored_file(request, registry.page, layout.page_asset(filename), registry.settings.public_url)


async def stored_file(request: Request, page: CatalogPage, key: str, public_url: str | None) -> Response:
    found = await page.read(key)
    if found is None:
        raise HTTPException(404)
    body, info = found
    headers = {
        "Content-Security-Policy": content_security_policy(public_url),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    if info.cache_control:
        headers["Cache-Control"] = info.cache_control
    if request.method == "HEAD":
        headers["Content-Length"] = str(len(body))
        body = b""
    return Response(body, headers=headers, media_type=info.content_type)


def content_security_policy(public_url: str | None) -> str:
    """Only the page's own files and the registry's documents; blob reads may be redirected to the public URL."""
    connect = "'self'"
    if public_url:
        parts = urlsplit(public_url)
        connect += f" {parts.scheme}://{parts.netloc}"
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        f"connect-src {connect}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


@contextlib.asynccontextmanager
async def publishing_page(app: FastAPI) -> AsyncIterator[None]:
    """Lifespan part: publish the page at start-up without letting an unreachable store hold the start.

    The wait ends early when `serve`'s store check (app.lifecycle) finds the store unusable: the page's own writes
    would only time out and retry, and the start (the listening port) would wait for them.
    """
    async with in_background(_publish(app.state.registry.page)) as task:
        unusable: asyncio.Event | None = getattr(app.state, "store_unusable", None)
        waits: set[asyncio.Future[object]] = {task}
        if unusable is not None:
            waits.add(asyncio.ensure_future(unusable.wait()))
        await asyncio.wait(waits, timeout=START_WAIT_SECONDS, return_when=asyncio.FIRST_COMPLETED)
        for waiting in waits - {task}:
            waiting.cancel()
        yield


async def _publish(page: CatalogPage) -> None:
    try:
        await page.ensure()
    except StorageFault as exc:
        log.warning("the catalog page could not be written (%s); the next visit of / writes it", exc)
