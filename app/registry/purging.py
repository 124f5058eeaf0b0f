"""The background purge of abandoned upload sessions, so that staging never grows without bound.

A client that dies mid-push leaves its session's bytes on the staging disk; nothing else would ever remove
them. Sessions untouched for `REGISTRY_UPLOAD_MAX_AGE_SECONDS` are deleted, checked every quarter of that age
(at most every ten minutes), so a session lives at most 1.25 times the age after its last byte arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import anyio.to_thread

from app.registry.uploads import Uploads

log = logging.getLogger("storj_registry")

MAX_INTERVAL_SECONDS = 600.0


def purge_interval(max_age_seconds: float) -> float:
    return min(max_age_seconds / 4, MAX_INTERVAL_SECONDS)


async def purge_forever(uploads: Uploads, max_age_seconds: float) -> None:
    interval = purge_interval(max_age_seconds)
    while True:
        try:
            removed = await anyio.to_thread.run_sync(uploads.purge_older_than, max_age_seconds)
        except OSError as exc:  # the staging disk misbehaving must not end the purging for good
            log.warning("purging abandoned uploads failed: %s", exc)
        else:
            if removed:
                log.info("purged %d abandoned upload(s) older than %.0f s", removed, max_age_seconds)
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def in_background(work: Coroutine[Any, Any, None]) -> AsyncIterator[asyncio.Task[None]]:
    """Run `work` while the block runs (a part of the registry's lifetime), cancelled when it ends."""
    task = asyncio.create_task(work)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
