"""What the service knows of a `storj-registry gc --delete` run on its bucket, and how a push keeps what it relies
on from being deleted by it, across replicas and without a lock service.

The protocol (docs/architecture.md, "The gc protocol"), with R the service's watch interval:

1. gc writes `layout.GC_RUN` (`{"id", "phase": "announced"}`), then waits longer than R and the service's trust
   windows: from then on every replica has seen the run, and relies on nothing it checked before it.
2. gc lists the bucket, decides what goes, writes those keys to `layout.gc_candidates` and sets the phase to
   `marked`. Each replica reads the candidates within R.
3. A replica about to rely on a candidate (a blob HEAD or GET, a blob commit, a manifest PUT naming it as a
   blob, child, digest or tag) first writes a claim (`layout.gc_claim`), then reads `layout.gc_condemned`.
4. After its grace (longer than R plus a push), gc writes `layout.gc_condemned`, then lists the claims, reads the
   repositories again, and deletes only the candidates that are neither claimed nor referenced now.
5. gc deletes its state, `GC_RUN` last.

Claim (write, then read) against condemn (write, then list): on a store with read-after-write consistency at
least one side sees the other. Either gc sees the claim and keeps the key, or the replica sees the key condemned
and waits until the run is over, then looks again (a HEAD answers 404 and the client uploads the blob again; a
manifest PUT is refused as naming unknown content). While no run is announced a push costs nothing more: the
watch is one GET every R seconds per replica, off the request path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

from anyio.to_thread import run_sync as run

from app import layout
from app.errors import StorageUnavailable
from app.storage import ObjectInfo, Storage, StorageFault

log = logging.getLogger("storj_registry")

PHASE_ANNOUNCED, PHASE_MARKED = "announced", "marked"
HEARTBEAT_SECONDS = 30.0  # a live run rewrites its announcement this often (app/tools/gc_run.py)
STALE_SECONDS = 300.0  # an announcement untouched this long belongs to a run that died: nothing to heed
WAIT_POLL_SECONDS = 0.2
WAIT_LIMIT_SECONDS = 300.0  # a run deletes what it condemned right away; longer means it died: the push gives up


@dataclass(frozen=True)
class Run:
    id: str
    candidates: frozenset[str] = frozenset()


def live_run(found: tuple[bytes, ObjectInfo] | None) -> tuple[str, str] | None:
    """The (id, phase) of the run announced, unless none is, or its heartbeat stopped (the run died)."""
    if found is None or time.time() - (found[1].last_modified or 0) > STALE_SECONDS:
        return None
    return parse_run(found[0])


def parse_run(body: bytes) -> tuple[str, str] | None:
    """The (id, phase) of a `GC_RUN` document; None for one that is not (nothing to heed)."""
    try:
        document = json.loads(body)
        return str(document["id"]), str(document["phase"])
    except (ValueError, KeyError, TypeError):
        return None


class GcRuns:
    def __init__(self, storage: Storage, watch_seconds: float) -> None:
        self.storage = storage
        self.watch_seconds = watch_seconds
        self.run: Run | None = None
        self.ended_at = -math.inf  # when this replica saw the last run gone (wall clock)
        self.claimed: set[str] = set()  # keys this replica claimed in the current run: safe until it ends
        # Until the announcement is first read, this process knows nothing of a run: it trusts no memory, and
        # nothing it relies on is used before the read (`claim` waits for it).
        self.unsure = True
        self._reading = asyncio.Lock()

    @property
    def active(self) -> bool:
        """A run is announced: nothing checked before it may be relied on."""
        return self.run is not None

    def horizon(self) -> float:
        """What the service believes about the bucket counts only if learnt after this (wall-clock) time: never
        while a run is announced, and after one, only what was learnt once its end was seen (it may have deleted
        anything learnt before). See app/registry/beliefs.py."""
        return math.inf if self.run is not None or self.unsure else self.ended_at

    async def know(self) -> None:
        """Read the announcement unless this process already has: before the first reliance on anything stored.
        A store that cannot be read raises (the request fails with 503), rather than going on unknowing."""
        if not self.unsure:
            return
        async with self._reading:
            if self.unsure:
                await self.refresh()

    async def refresh(self) -> None:
        found = await run(self.storage.read_small, layout.GC_RUN)
        if self.unsure:
            self.unsure, self.ended_at = False, time.time()
        announced = live_run(found)
        if announced is None:
            if self.run is not None:
                self.ended_at = time.time()
            self.run = None
            return
        run_id, phase = announced
        if self.run is not None and self.run.id == run_id and (self.run.candidates or phase != PHASE_MARKED):
            return
        candidates: frozenset[str] = frozenset()
        if phase == PHASE_MARKED:
            listed = await run(self.storage.read_small, layout.gc_candidates(run_id))
            candidates = frozenset(json.loads(listed[0])) if listed else frozenset()
        if self.run is None or self.run.id != run_id:
            self.claimed = set()
            log.info("gc run %s announced: pushes claim what they rely on until it ends", run_id)
        self.run = Run(run_id, candidates)

    async def watch(self) -> None:
        """Look at once (a process starting during a run must know it before its first write; the start is not held
        for it: `know` waits where a request needs it), then every `watch_seconds`."""
        while True:
            try:
                await self.know() if self.unsure else await self.refresh()
            except (StorageFault, ValueError) as exc:  # keep the last state: a store hiccup announces nothing
                log.debug("could not read the gc announcement: %s", exc)
            await asyncio.sleep(self.watch_seconds)

    async def claim(self, keys: Iterable[str]) -> None:
        """Keep the run from deleting `keys`; if it already condemned one, return only once it is over."""
        await self.know()
        current = self.run
        if current is None:
            return
        claimed = sorted({key for key in keys if key in current.candidates} - self.claimed)
        if not claimed:
            return
        marker = b"claimed by a push"
        await asyncio.gather(
            *(run(self.storage.put_bytes, layout.gc_claim(current.id, key), marker, layout.TEXT) for key in claimed)
        )
        found = await run(self.storage.read_small, layout.gc_condemned(current.id))
        if found is not None and set(json.loads(found[0])) & set(claimed):
            await self._wait_for_end(current.id)
        elif self.run is current:
            self.claimed.update(claimed)

    async def _wait_for_end(self, run_id: str) -> None:
        deadline = time.monotonic() + WAIT_LIMIT_SECONDS
        while time.monotonic() < deadline:
            announced = live_run(await run(self.storage.read_small, layout.GC_RUN))
            if announced is None or announced[0] != run_id:
                await self.refresh()
                return
            await asyncio.sleep(WAIT_POLL_SECONDS)
        raise StorageUnavailable(
            f"gc run {run_id} is deleting content this request relies on and has not finished; retry later",
            headers={"Retry-After": "60"},
        )
