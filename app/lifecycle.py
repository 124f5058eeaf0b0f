"""Start and graceful stop of the service.

On SIGTERM (Kubernetes stopping a pod) the replica first *drains*: for `REGISTRY_SHUTDOWN_DRAIN_SECONDS` it keeps
serving, but `/readyz` answers 503 and new upload sessions are refused with 503 + `Retry-After`, so the client starts
them on another replica while pushes in progress here go on. Then uvicorn closes the listener and waits up to
`REGISTRY_SHUTDOWN_GRACE_SECONDS` for requests in flight, blob commits included, before it cancels them. A second
signal skips the drain. Ctrl-C (SIGINT) stops it the same way, and the process then exits 0 without a traceback.
A request still running when the grace ends, or at a second signal, is answered 503 (`app.edge.StoppedRequests`);
the bytes an upload staged stay in the staging directory.

At start, the directories the service writes are created and probed first (a wrong one stops it with a line
naming the setting), then the port is bound (a port in use is one line, before anything is written to the store),
and the store is checked once in the background, alongside the rest of the start: an unreachable one, or wrong
keys, are logged as a warning within seconds rather than found by the first push.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
import tempfile
import time
from types import FrameType
from typing import TYPE_CHECKING, Any, ClassVar

import anyio.to_thread
import uvicorn
from fastapi import FastAPI, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import ShuttingDown
from app.settings import Settings, SettingsError

if TYPE_CHECKING:
    from app.storage import Storage

RETRY_AFTER_SECONDS = "1"
FORCED_STOP_SECONDS = 5.0  # at a second signal, how long requests get to answer their 503

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


def listening_socket(host: str, port: int) -> socket.socket:
    """The service's socket, bound before anything else starts: uvicorn would bind it only after the app's start
    (which writes the catalog page), and report a port in use as seven lines and exit 3."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SettingsError(f"cannot listen on {host}:{port}: {_bind_problem(exc, port)}") from None
    sock.set_inheritable(True)
    return sock


def _bind_problem(exc: OSError, port: int) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "another process uses this port (choose another with --port or REGISTRY_LISTEN_PORT)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "not an address of this machine (--host or REGISTRY_LISTEN_HOST)"
    if exc.errno == errno.EACCES:
        return f"port {port} needs privileges this process lacks (choose one above 1023)"
    return _reason(exc)


async def warn_if_store_unusable(storage: Storage, unusable: asyncio.Event | None = None) -> None:
    """Check the store once, in the background, and say loudly when it fails: the service still starts (the
    store may come back), but an operator should not learn of wrong keys from the first push's 503.

    The sentence is the one `/readyz` shows and a push's 503 carries; other parts meeting the same fault later
    log it at DEBUG only (`app.observability.OneWarningPerCause`).
    """
    from app.storage import StorageFault
    from app.storage.faults import UNUSABLE, describe, notices

    try:
        await anyio.to_thread.run_sync(storage.check, abandon_on_cancel=True)
    except StorageFault as exc:
        problem = describe(exc)
        if unusable is not None:
            unusable.set()  # the app's start stops waiting on the store (app.api.page.publishing_page)
        if notices.first(problem):
            log.warning(UNUSABLE, problem)


class DrainingServer(uvicorn.Server):
    """uvicorn, with a drain period between the first SIGTERM/SIGINT and the stop of the listener.

    Unlike plain uvicorn it does not raise the signal again once stopped: that re-raise turns Ctrl-C into a
    `KeyboardInterrupt` traceback and exit 130 after an orderly stop.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        drain: Drain,
        drain_seconds: float,
        storage: Storage | None = None,
        unusable: asyncio.Event | None = None,
    ) -> None:
        """`unusable` is set when the start-up check finds the store unusable (the app's start then stops waiting)."""
        super().__init__(config)
        self.unusable = unusable
        self.drain = drain
        self.drain_seconds = drain_seconds
        self.storage = storage
        self.pending_signal: int | None = None
        self.announced = False
        self.store_check: asyncio.Task[None] | None = None

    async def startup(self, sockets: Any = None) -> None:
        """The store check first, so that its warning does not wait for the app's start (the page, the warm-up)."""
        if self.storage is not None:
            self.store_check = asyncio.create_task(warn_if_store_unusable(self.storage, self.unusable))
        await super().startup(sockets)
        if self.started:
            scheme = "https" if self.config.ssl else "http"
            host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
            log.info("listening on %s://%s:%d (Ctrl-C stops)", scheme, host, self.config.port)

    async def shutdown(self, sockets: Any = None) -> None:
        if self.store_check is not None:
            self.store_check.cancel()
        await super().shutdown(sockets)
        if self.force_exit:
            await self._answer_the_rest()

    async def _answer_the_rest(self) -> None:
        """At a second signal uvicorn stops waiting: cancel what still runs, so each request answers its 503 now
        (rather than a 500 when the event loop closes)."""
        running = list(self.server_state.tasks)
        if not running:
            return
        log.warning("stopping now: %d request(s) still running are answered 503", len(running))
        for task in running:
            task.cancel()
        await asyncio.wait(running, timeout=FORCED_STOP_SECONDS)

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


class QuietForcedStop:
    """The app as uvicorn runs it: a lifespan that a forced stop cancels ends without a traceback.

    At a second signal uvicorn skips the app's shutdown, and the event loop's end cancels the lifespan: it still
    runs its `finally` (writes in flight finish), but Starlette reports the cancellation as a failure whose message
    is a traceback. That message, and only for a cancellation, is left empty.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        cancelled = False

        async def watched() -> Message:
            nonlocal cancelled
            try:
                return await receive()
            except asyncio.CancelledError:
                cancelled = True
                raise

        async def quiet(message: Message) -> None:
            if cancelled and message["type"].endswith(".failed"):
                message = {**message, "message": ""}
            await send(message)

        await self.app(scope, watched, quiet)


class StopInWords(logging.Filter):
    """uvicorn's lines about requests its stop cut short, as one warning in the service's words."""

    rewrites: ClassVar[dict[str, str]] = {
        "Cancel %s running task(s), timeout graceful shutdown exceeded": (
            "REGISTRY_SHUTDOWN_GRACE_SECONDS ran out: %s request(s) still running are answered 503 "
            "(the bytes an upload staged are kept)"
        ),
        "ASGI callable returned without completing response.": "a response in progress was cut short by the stop",
    }

    def filter(self, record: logging.LogRecord) -> bool:
        words = self.rewrites.get(str(record.msg))
        if words is not None:
            record.msg, record.levelno, record.levelname = words, logging.WARNING, "WARNING"
        return True


def serve(
    app: FastAPI, settings: Settings, sock: socket.socket, *, log_level: str = "info", **uvicorn_options: Any
) -> None:
    """Run `app` on `sock` until SIGTERM/SIGINT with a graceful stop; uvicorn logs through ours
    (`configure_logging`). `uvicorn_options` carry `host` and `port` for the messages only: `sock` is bound."""
    config = uvicorn.Config(
        QuietForcedStop(app),
        log_config=None,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
        **uvicorn_options,
    )
    logging.getLogger("uvicorn.error").addFilter(StopInWords())
    app.state.store_unusable = asyncio.Event()
    storage = app.state.registry.storage
    server = DrainingServer(config, drain_of(app), settings.shutdown_drain_seconds, storage, app.state.store_unusable)
    server.run(sockets=[sock])
