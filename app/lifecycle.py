"""Start and graceful stop of the service.

On SIGTERM (Kubernetes stopping a pod) the replica first *drains*: for `REGISTRY_SHUTDOWN_DRAIN_SECONDS` it keeps
serving, but `/readyz` answers 503 and new upload sessions are refused with 503 + `Retry-After`, so the client starts
them on another replica while pushes in progress here go on. Then uvicorn closes the listener and waits up to
`REGISTRY_SHUTDOWN_GRACE_SECONDS` for requests in flight, blob commits included, before it cancels them. A second
signal skips the drain. Ctrl-C (SIGINT) stops it the same way, and the process then exits 0 without a traceback.

At start, the directories the service writes are created and probed first (a wrong one stops it with a line
naming the setting), and the store is checked once in the background: an unreachable one, or wrong keys, are
logged as a warning right away rather than found by the first push.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import tempfile
import time
from types import FrameType
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import uvicorn
from fastapi import FastAPI, Request

from app.errors import ShuttingDown
from app.settings import Settings, SettingsError

if TYPE_CHECKING:
    from app.storage import Storage

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


def prepare_directories(settings: Settings) -> None:
    """Create the directories the service writes and prove each writable; a SettingsError naming the variable if not.

    Without this a wrong path surfaces as a traceback from deep inside start-up (`FileNotFoundError` for
    `/proc/nope`, `FileExistsError` for a file, `OSError: Read-only file system` in a read-only container).
    """
    directories = {"REGISTRY_STAGING_DIR": settings.staging_dir}
    if settings.storage == "filesystem":
        directories["REGISTRY_DATA_DIR"] = settings.data_dir
    for variable, directory in directories.items():
        try:
            directory.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=directory, prefix=".write-probe-"):
                pass
        except FileExistsError:
            raise SettingsError.naming(variable, f"{directory} exists and is not a directory") from None
        except OSError as exc:
            raise SettingsError.naming(variable, f"{directory} is not a writable directory ({_reason(exc)})") from None


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


async def warn_if_store_unusable(storage: Storage) -> None:
    """Check the store once, in the background, and say loudly when it fails: the service still starts (the
    store may come back), but an operator should not learn of wrong keys from the first push's 503."""
    from app.storage import StorageFault
    from app.storage.faults import describe

    try:
        await anyio.to_thread.run_sync(storage.check, abandon_on_cancel=True)
        return
    except StorageFault as exc:
        problem = f"{describe(exc)} ({exc})"
    except KeyError:  # the S3 backend's answer to a missing bucket
        problem = "the bucket does not exist"
    log.warning("the store is not usable: %s; serving anyway: /readyz answers 503 and pushes fail until it is", problem)


class DrainingServer(uvicorn.Server):
    """uvicorn, with a drain period between the first SIGTERM/SIGINT and the stop of the listener.

    Unlike plain uvicorn it does not raise the signal again once stopped: that re-raise turns Ctrl-C into a
    `KeyboardInterrupt` traceback and exit 130 after an orderly stop.
    """

    def __init__(
        self, config: uvicorn.Config, drain: Drain, drain_seconds: float, storage: Storage | None = None
    ) -> None:
        super().__init__(config)
        self.drain = drain
        self.drain_seconds = drain_seconds
        self.storage = storage
        self.pending_signal: int | None = None
        self.announced = False
        self.store_check: asyncio.Task[None] | None = None

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.storage is not None:
            self.store_check = asyncio.create_task(warn_if_store_unusable(self.storage))

    async def shutdown(self, sockets: Any = None) -> None:
        if self.store_check is not None:
            self.store_check.cancel()
        await super().shutdown(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """First signal: start draining and stop later. Second signal: stop now."""
        if self.drain.active or self.drain_seconds <= 0:
            self.drain.start()
            self._stop(sig)
            return
        self.drain.start()
        self.pending_signal = sig

    def _stop(self, sig: int) -> None:
        """uvicorn's reaction to a signal (a second SIGINT forces the exit), without remembering it to re-raise."""
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self.pending_signal is not None and not self.announced:
            self.announced = True  # logged here, not in the signal handler, which may interrupt a log call
            log.info("draining for %g s: new uploads refused, requests in progress go on", self.drain_seconds)
        if self.pending_signal is not None and self.drain.elapsed() >= self.drain_seconds:
            sig, self.pending_signal = self.pending_signal, None
            self._stop(sig)
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
    DrainingServer(config, drain_of(app), settings.shutdown_drain_seconds, app.state.registry.storage).run()
