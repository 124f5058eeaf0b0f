"""Start and graceful stop of the service.

On SIGTERM (Kubernetes stopping a pod) the replica first *drains*: for `REGISTRY_SHUTDOWN_DRAIN_SECONDS` it keeps
serving, but `/readyz` answers 503 and new upload sessions are refused with 503 + `Retry-After`, so the client starts
them on another replica while pushes in progress here go on. Then uvicorn closes the listener and waits up to
`REGISTRY_SHUTDOWN_GRACE_SECONDS` for requests in flight, blob commits included, before it cancels them. A second
signal skips the drain.
"""

from __future__ import annotations

import logging
import time
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI, Request

from app.errors import ShuttingDown
from app.settings import Settings

RETRY_AFTER_SECONDS = "1"

log = logging.getLogger("storj_registry")


class Drain:
    """Whether this replica is on its way out (set from the signal handler, read by requests)."""

    def __init__(self) -> None:
        self.since: float | None = None

    @property
    def active(self) -> bool:
        return self.since is not None

    def start(self) -> None:
        if self.since is None:
            self.since = time.monotonic()

    def elapsed(self) -> float:
        return 0.0 if self.since is None else time.monotonic() - self.since


def drain_of(app: FastAPI) -> Drain:
    return app.state.drain


async def accepting_uploads(request: Request) -> None:
    """Route dependency of upload starts: refuse new sessions while draining (the client retries elsewhere)."""
    if drain_of(request.app).active:
        raise ShuttingDown(
            "this replica is shutting down, start the upload again", headers={"Retry-After": RETRY_AFTER_SECONDS}
        )


class DrainingServer(uvicorn.Server):
    """uvicorn, with a drain period between the first SIGTERM/SIGINT and the stop of the listener."""

    def __init__(self, config: uvicorn.Config, drain: Drain, drain_seconds: float) -> None:
        super().__init__(config)
        self.drain = drain
        self.drain_seconds = drain_seconds
        self.pending_signal: int | None = None
        self.announced = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """First signal: start draining and hand the signal to uvicorn later. Second signal: stop now."""
        if self.drain.active or self.drain_seconds <= 0:
            self.drain.start()
            super().handle_exit(sig, frame)
            return
        self.drain.start()
        self.pending_signal = sig

    async def on_tick(self, counter: int) -> bool:
        if self.pending_signal is not None and not self.announced:
            self.announced = True  # logged here, not in the signal handler, which may interrupt a log call
            log.info("draining for %g s: new uploads refused, requests in progress go on", self.drain_seconds)
        if self.pending_signal is not None and self.drain.elapsed() >= self.drain_seconds:
            sig, self.pending_signal = self.pending_signal, None
            super().handle_exit(sig, None)
        return await super().on_tick(counter)


def serve(app: FastAPI, settings: Settings, *, log_level: str = "info", **uvicorn_options: Any) -> None:
    """Run `app` until SIGTERM/SIGINT with a graceful stop; uvicorn logs through ours (`configure_logging`)."""
    config = uvicorn.Config(
        app,
        log_config=None,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
        **uvicorn_options,
    )
    DrainingServer(config, drain_of(app), settings.shutdown_drain_seconds).run()
