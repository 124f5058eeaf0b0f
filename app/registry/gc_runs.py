"""A writer's side of a `storj-registry gc --delete` run: how a push keeps what it relies on from being deleted,
across replicas and without a lock service, and how gc learns when every writer is ready so it waits no longer.

Every writer (a `serve` replica, `copy`, `sync`: anything running `Registry.running()`) is a *participant*: it
writes `layout.gc_participant(id)` before it first reads the announcement, rewrites it every PRESENCE_SECONDS
and deletes it when it stops. The protocol (docs/architecture.md, "The gc protocol"):

1. gc writes `layout.GC_RUN` create-only, then lists the participants. Each reads the announcement (its watch,
   every R seconds, or before its next reliance on the store) and from then on relies on no memory; once the
   requests it was serving when it saw the run are over, it acknowledges (`layout.gc_ack(run, "announced", id)`).
   gc waits for those acknowledgements (a participant whose presence went stale does not count), at most
   `--settle-seconds`: with no participant, not at all.
2. gc lists the bucket, decides what goes, writes the candidates (`layout.gc_candidates`) and the phase `marked`.
   Each participant reads them, claims the candidates it told a client were there within PROMISE_SECONDS (a push
   that HEADed a blob before the run may PUT its manifest after), and acknowledges `marked`; gc waits for that,
   at most `--mark-seconds`.
3. A participant about to rely on a candidate (a blob HEAD or GET, a commit, a mount, a manifest naming it as a
   blob, child, digest or tag) reads the run's state again if it is more than FRESH_SECONDS old, writes a claim
   (`layout.gc_claim`), then reads `layout.gc_condemned`.
4. gc writes `layout.gc_condemned`, lists the claims, reads the repositories again, and deletes only the
   candidates that are neither claimed nor referenced now.
5. gc deletes its state, `GC_RUN` last.

Claim (write, then read) against condemn (write, then list), and presence (write, then read the announcement)
against announce (write, then list the participants): on a store with read-after-write consistency at least one
side of each pair sees the other. Either gc waits for a participant, or the participant saw the run before it
relied on anything; either gc sees a claim and keeps the key, or the participant sees it condemned and waits
until the run is over, then looks again (a HEAD answers 404 and the client uploads the blob again; a manifest PUT
is refused as naming unknown content). While no run is announced a push costs nothing more: the watch is one GET
every R seconds per participant, off the request path, and the presence one write every PRESENCE_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import re
import secrets
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from anyio.to_thread import run_sync as run

from app import layout
from app.errors import StorageUnavailable
from app.storage import ObjectInfo, Storage, StorageFault

log = logging.getLogger("storj_registry")

PHASE_ANNOUNCED, PHASE_MARKED = "announced", "marked"
HEARTBEAT_SECONDS = 30.0  # a live run rewrites its announcement this often (app/tools/gc_run.py)
STALE_SECONDS = 300.0  # an announcement untouched this long belongs to a run that died: nothing to heed
PRESENCE_SECONDS = 300.0  # a participant rewrites its presence this often
PRESENCE_STALE_SECONDS = 3 * PRESENCE_SECONDS + 60  # a presence untouched this long is a participant that died
PROMISE_SECONDS = 900.0  # how long after a client was told a blob is there it may rely on that
IDLE_SECONDS = PROMISE_SECONDS  # with no request relying on the store this long (nor a promise), a participant rests
MAX_PROMISES = 100_000
FRESH_SECONDS = 1.0  # during a run, the run's state read before a claim is at most this old
WAIT_POLL_SECONDS = 0.2
WAIT_LIMIT_SECONDS = 300.0  # a run deletes what it condemned right away; longer means it died: the push gives up


@dataclass(frozen=True)
class Run:
    id: str
    phase: str = PHASE_ANNOUNCED
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


def participant_id() -> str:
    """This process, as a key component: its host, its pid and a random part (a restarted pid is another)."""
    host = re.sub(r"[^a-z0-9.-]+", "-", socket.gethostname().lower()).strip("-.") or "host"
    return f"{host[:60]}-{os.getpid()}-{secrets.token_hex(3)}"


class GcRuns:
    def __init__(self, storage: Storage, watch_seconds: float, *, participate: bool = True) -> None:
        self.storage = storage
        self.watch_seconds = watch_seconds
        self.participate = participate  # write a presence and acknowledge runs (every Registry.running does)
        self.id = participant_id()
        self.started = time.time()  # in the presence: gc aborts multipart uploads no live participant can hold
        self.run: Run | None = None
        self.ended_at = -math.inf  # when this process saw the last run gone (wall clock)
        self.claimed: set[str] = set()  # keys this process claimed in the current run: safe until it ends
        # Until the announcement is first read, this process knows nothing of a run: it trusts no memory, and
        # nothing it relies on is used before the read (`claim` waits for it).
        self.unsure = True
        self._reading = asyncio.Lock()
        self._refreshed_at = -math.inf  # monotonic
        self._reads_begun = 0  # reads of the announcement (`refresh`), numbered as they begin
        self._read_known = 0  # the read whose result this process knows (one begun before it is dropped)
        self._present_at = -math.inf  # monotonic: when the presence was last written
        self._presence_sent = False
        self._presence_lock = threading.Lock()
        self._left = False
        self._relying: dict[int, float] = {}  # requests relying on the store now -> when they began (monotonic)
        self._last_active = time.monotonic()  # the last request relying on the store, or promise, ended
        self.resting = False  # idle: reads no announcement; its presence says so (see `rest`)
        self._next_request = 0
        self._promised: OrderedDict[str, float] = OrderedDict()  # blob keys a client was told are there -> when
        self._acknowledged: set[tuple[str, str]] = set()
        self._acks: set[asyncio.Task[None]] = set()

    # what a run means for memory --------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """A run is announced: nothing checked before it may be relied on."""
        return self.run is not None

    def horizon(self) -> float:
        """What the service believes about the bucket counts only if learnt after this (wall-clock) time: never
        while a run is announced (or not yet known), and after one, only what was learnt once its end was seen (it
        may have deleted anything learnt before). See app/registry/beliefs.py."""
        return math.inf if self.run is not None or self.unsure else self.ended_at

    # reading the announcement -----------------------------------------------------------------------------

    async def know(self) -> None:
        """Read the announcement unless this process already has: before its first reliance on anything stored.
        Its presence is written first (see the module's docstring). A store that cannot be read raises (the
        request fails with 503), rather than going on unknowing."""
        if not self.unsure:
            return
        async with self._reading:
            if self.unsure:
                self.resting = False
                if self.participate:
                    await self.be_present()
                await self.refresh()

    async def refresh(self) -> None:
        """Read the announcement (and a marked run's candidates), then change what this process knows at once,
        with no wait in between: a request that finds the announcement read (`know`) finds the run with it. The
        watch and a claim may read at once; the result of the read begun last stands, whichever lands last."""
        self._reads_begun += 1
        number = self._reads_begun
        started = time.monotonic()
        found = await run(self.storage.read_small, layout.GC_RUN)
        current = await self._as_announced(live_run(found))
        if number < self._read_known:
            return
        self._read_known = number
        self._refreshed_at = started
        if self.unsure:
            self.unsure, self.ended_at = False, time.time()
        if current is None:
            if self.run is not None:
                self.ended_at = time.time()
                log.info("gc run %s is over", self.run.id)
            self.run = None
            return
        if current is self.run:
            return
        if self.run is None or self.run.id != current.id:
            self.claimed = set()
            log.info("gc run %s announced: pushes claim what they rely on until it ends", current.id)
        self.run = current
        if self.participate:
            self._acknowledge_when_ready(current, started)

    async def _as_announced(self, announced: tuple[str, str] | None) -> Run | None:
        """The run an announcement's (id, phase) stands for: the one known already, or a new one (with its
        candidates read, once marked)."""
        if announced is None:
            return None
        if self.run is not None and (self.run.id, self.run.phase) == announced:
            return self.run
        run_id, phase = announced
        candidates: frozenset[str] = frozenset()
        if phase == PHASE_MARKED:
            listed = await run(self.storage.read_small, layout.gc_candidates(run_id))
            candidates = frozenset(json.loads(listed[0])) if listed else frozenset()
        return Run(run_id, phase, candidates)

    async def watch(self) -> None:
        """Every `watch_seconds`, once the announcement was first read (at start, or by the first request that
        relied on the store: `know`), read it again; rewrite the presence every PRESENCE_SECONDS."""
        while True:
            await asyncio.sleep(self.watch_seconds)
            if self.unsure and not self.resting:
                continue
            try:
                if self._idle():
                    await self.rest()
                elif not self.resting:
                    await self.refresh()
                if self.participate and time.monotonic() - self._present_at > PRESENCE_SECONDS:
                    await self.be_present()
            except (StorageFault, ValueError) as exc:  # keep the last state: a store hiccup announces nothing
                log.debug("could not read the gc announcement: %s", exc)

    def _idle(self) -> bool:
        """Nothing relies on the store, nor has for IDLE_SECONDS (no promise to a client either), and no run is on."""
        quiet = time.monotonic() - max(self._last_active, *self._promised.values(), -math.inf) > IDLE_SECONDS
        return self.participate and not self.resting and quiet and self.run is None and not self._relying

    async def rest(self) -> None:
        """Stop reading the announcement until a request relies on the store again, which then reads it first
        (`know`: presence, then announcement, as at start). The presence says "idle": gc counts the participant
        as ready (it relies on nothing until it has read the announcement) rather than waiting for it. An idle
        replica costs one presence write every PRESENCE_SECONDS instead of a read every watch interval."""
        async with self._reading:
            if not self._idle():
                return
            self.unsure = self.resting = True  # before any await: the next reliance reads the announcement
            await self.be_present()

    # being a participant ------------------------------------------------------------------------------------

    async def be_present(self) -> None:
        presence = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "at": time.time(),
            "started": self.started,  # gc aborts multipart uploads begun before every live participant started
            "idle": self.resting,  # gc need not wait for it: it reads the announcement before relying on anything
        }
        document = json.dumps(presence).encode()
        if await run(self._write_presence, document):
            self._present_at = time.monotonic()

    def _write_presence(self, document: bytes) -> bool:
        """In a worker thread, under the presence's lock: a write still in flight when the process stops (its
        request cancelled) is done before `leave` removes it, and none comes after."""
        with self._presence_lock:
            if self._left:
                return False
            self._presence_sent = True
            self.storage.put_bytes(layout.gc_participant(self.id), document, layout.JSON, layout.MUTABLE_CACHE)
            return True

    async def leave(self) -> None:
        """The process stops: gc no longer waits for it."""
        for task in self._acks:
            task.cancel()
        with contextlib.suppress(StorageFault):
            await run(self._remove_presence)

    def _remove_presence(self) -> None:
        with self._presence_lock:
            self._left = True
            if self._presence_sent:
                self.storage.delete(layout.gc_participant(self.id))

    @contextlib.asynccontextmanager
    async def relying(self) -> AsyncIterator[None]:
        """Around a request that relies on what is stored: a run's acknowledgement waits for it to end."""
        self._next_request += 1
        number = self._next_request
        self._relying[number] = time.monotonic()
        try:
            yield
        finally:
            del self._relying[number]
            self._last_active = time.monotonic()

    def promised(self, key: str) -> None:
        """A client was told the blob at `key` is there: it may rely on it for PROMISE_SECONDS."""
        self._promised.pop(key, None)
        self._promised[key] = time.monotonic()
        while len(self._promised) > MAX_PROMISES:
            self._promised.popitem(last=False)

    def _acknowledge_when_ready(self, current: Run, seen_at: float) -> None:
        if (current.id, current.phase) in self._acknowledged:
            return
        self._acknowledged.add((current.id, current.phase))
        task = asyncio.create_task(self._acknowledge(current, seen_at))
        self._acks.add(task)
        task.add_done_callback(self._acks.discard)

    async def _acknowledge(self, current: Run, seen_at: float) -> None:
        """Once the requests that began before the run was seen are over (and, once marked, the candidates a client
        was recently told of are claimed), tell gc this participant is ready."""
        while any(began < seen_at for began in self._relying.values()):
            await asyncio.sleep(WAIT_POLL_SECONDS)
        try:
            if current.phase == PHASE_MARKED:
                cutoff = time.monotonic() - PROMISE_SECONDS
                await self._claim_in(current, [key for key, at in self._promised.items() if at >= cutoff])
            ack = layout.gc_ack(current.id, current.phase, self.id)
            await run(self.storage.put_bytes, ack, b"ready", layout.TEXT)
        except (StorageFault, StorageUnavailable) as exc:  # gc waits for the ack at most its bound
            log.warning("could not acknowledge gc run %s: %s", current.id, exc)

    # relying on a key during a run -------------------------------------------------------------------------------

    async def claim(self, keys: Iterable[str]) -> None:
        """Keep the run from deleting `keys`; if it already condemned one, return only once it is over."""
        await self.know()
        if self.run is not None and time.monotonic() - self._refreshed_at > FRESH_SECONDS:
            await self.refresh()  # the run's phase and candidates as they are now, not one watch interval ago
        current = self.run
        if current is not None:
            await self._claim_in(current, keys)

    async def _claim_in(self, current: Run, keys: Iterable[str]) -> None:
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
