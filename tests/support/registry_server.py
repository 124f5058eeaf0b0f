"""Run the registry on a real uvicorn server in a background thread, on a free loopback port."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from app.edge import server_options
from app.main import create_app
from app.registry import Registry
from app.settings import Settings
from tests.support.tools import free_port


@contextmanager
def running_registry(settings: Settings, registry: Registry | None = None) -> Iterator[str]:
    """Yield the base URL (`http://127.0.0.1:PORT`) of a registry serving `settings` until the block ends.

    The server runs with the options `storj-registry serve` gives uvicorn (HTTPS when the settings name a
    certificate, then the URL is `https://`; no proxy headers believed but those `app.edge` trusts).
    """
    with serving(create_app(settings, registry), settings) as url:
        yield url


@contextmanager
def serving(app: FastAPI, settings: Settings, port: int | None = None) -> Iterator[str]:
    """`running_registry` for an application already created (its state at hand), on `port` or a free one."""
    port = port or free_port()
    options = server_options(settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", proxy_headers=False, **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("registry did not start")
        time.sleep(0.01)
    try:
        yield f"{'https' if 'ssl_certfile' in options else 'http'}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
