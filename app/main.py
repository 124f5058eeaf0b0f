"""The ASGI application: routers wired to a registry built once at start-up."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

from fastapi import FastAPI

from app import edge
from app.api import base, blobs, health, manifests, page, tags, uploads
from app.api.health import Readiness
from app.events import Notifier
from app.lifecycle import Drain
from app.observability import RequestObserver, instrument_storage
from app.registry import Registry, build_registry
from app.registry.gc_runs import watching_gc_runs
from app.registry.purging import in_background, purging_abandoned_uploads
from app.settings import Settings, load_settings


def create_app(settings: Settings | None = None, registry: Registry | None = None) -> FastAPI:
    settings = settings or load_settings()
    app = FastAPI(title="storj-registry", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.settings = settings
    edge.install(app, settings)  # auth, limits, proxy headers: before the routers, which it guards
    app.state.registry = registry or build_registry(settings)
    app.state.notifier = Notifier(settings)
    app.state.drain = Drain()
    app.state.readiness = Readiness(app.state.registry.storage, app.state.registry.uploads.root)
    instrument_storage(app.state.registry.storage)
    base.install_error_handlers(app)
    # Order matters: upload routes before blob routes, both before the catch-all shapes of manifests.
    for module in (base, health, page, uploads, blobs, manifests, tags):
        app.include_router(module.router)
    # Added last, so outermost: it sees every answer, those of other middlewares included.
    app.add_middleware(RequestObserver)
    return app


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """At start the catalog page is published and the bucket's state read in the background (`Registry.warm`);
    while the app serves, abandoned uploads are purged, events delivered, a gc run is watched for, and SIGHUP reads
    the policy file again.
    At the end, blob writes in flight finish and events left over are kept."""
    registry: Registry = app.state.registry
    notifier: Notifier = app.state.notifier
    with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):  # not the main thread (tests)
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, registry.policy.reload)
    async with (
        page.publishing_page(app),
        in_background(registry.warm()),
        purging_abandoned_uploads(app),
        watching_gc_runs(app),
    ):
        notifier.start()
        try:
            yield
        finally:
            await registry.settle()
            await notifier.stop()
