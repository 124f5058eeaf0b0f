"""The ASGI application: routers wired to a registry built once at start-up."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

from fastapi import FastAPI

from app import cluster, edge
from app.api import base, blobs, health, manifests, page, tags, uploads
from app.api.health import Readiness
from app.lifecycle import Drain
from app.observability import RequestObserver, instrument_storage
from app.registry import Registry, build_registry
from app.settings import Settings, load_settings


def create_app(settings: Settings | None = None, registry: Registry | None = None) -> FastAPI:
    settings = settings or load_settings()
    app = FastAPI(title="storj-registry", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.settings = settings
    app.state.drain = Drain()
    edge.install(app, settings)  # auth, limits, proxy headers, peers: before the routers, which it guards
    app.state.registry = registry or build_registry(settings)
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
    """The registry's lifetime (app/registry/__init__.py: gc watch, purge, events, writes behind answers), the
    catalog page published at start, and SIGHUP reading the policy file again."""
    registry: Registry = app.state.registry
    with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):  # not the main thread (tests)
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, registry.policy.reload)
    async with page.publishing_page(app), registry.running(), cluster.running(app):
        yield
