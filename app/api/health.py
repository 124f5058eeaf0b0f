"""Probes: `/healthz` (the process answers) and `/readyz` (this replica can take pushes right now).

Liveness must not depend on Storj: a storage outage would otherwise restart every pod. Readiness does: a replica
that cannot reach the bucket or write its staging disk leaves the Service, and so does one that is draining.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from app.lifecycle import drain_of
from app.storage import Storage, StorageFault
from app.storage.faults import describe, notices

# Below the chart's readiness probe timeout (5 s), so the probe gets our answer rather than its own timeout.
READY_TIMEOUT_SECONDS = 4.0
MAX_PROBLEM_CHARS = 300

router = APIRouter()


@router.get("/healthz", include_in_schema=False)
async def healthz() -> Response:
    return JSONResponse({"status": "ok"})


@router.get("/readyz", include_in_schema=False)
async def readyz(request: Request) -> Response:
    readiness: Readiness = request.app.state.readiness
    checks = await readiness.run()
    if drain_of(request.app).active:
        checks["shutdown"] = "draining: this replica is stopping"
    ready = all(result == "ok" for result in checks.values())
    body = {"status": "ready" if ready else "unavailable", "checks": checks}
    return JSONResponse(body, status_code=200 if ready else 503)


class Readiness:
    """The blocking checks, each run in a worker thread with a time limit.

    A check that outlives its limit keeps running and the next probe waits for that same run instead of
    starting another: a hanging storage endpoint costs one thread, not one per probe.
    """

    def __init__(self, storage: Storage, staging_dir: Path, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        self.checks: dict[str, Callable[[], None]] = {
            "storage": storage.check,
            "staging": partial(check_writable, staging_dir),
        }
        self.timeout = timeout
        self._running: dict[str, asyncio.Future[None]] = {}

    async def run(self) -> dict[str, str]:
        """`ok` or what went wrong, for each check."""
        results = await asyncio.gather(*(self._outcome(name) for name in self.checks))
        return dict(zip(self.checks, results, strict=True))

    async def _outcome(self, name: str) -> str:
        future = self._running.get(name)
        if future is None or future.done():
            future = asyncio.get_running_loop().run_in_executor(None, self.checks[name])
            future.add_done_callback(_retrieve_exception)
            self._running[name] = future
        try:
            await asyncio.wait_for(asyncio.shield(future), self.timeout)
        except TimeoutError:
            return f"no answer within {self.timeout:g} s"
        except Exception as exc:
            return problem(exc)[:MAX_PROBLEM_CHARS]
        if name == "storage":
            notices.clear()  # the store answers: its next fault is news to the log
        return "ok"


def problem(exc: Exception) -> str:
    """The sentence the log uses for the same fault (app.storage.faults), never a raw exception."""
    if isinstance(exc, StorageFault):
        return describe(exc)
    if isinstance(exc, OSError):
        return f"the staging directory is not writable ({exc.strerror or type(exc).__name__})"
    return f"the check failed ({type(exc).__name__})"


def check_writable(directory: Path) -> None:
    """Create, sync and remove a small file: fails on a read-only, missing or full staging volume."""
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".readyz-") as probe:
        probe.write(b"ready")
        probe.flush()
        os.fsync(probe.fileno())


def _retrieve_exception(future: asyncio.Future[None]) -> None:
    """Mark a check's failure as seen even when no probe was left waiting for it (no asyncio warning)."""
    if not future.cancelled():
        future.exception()
