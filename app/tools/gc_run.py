"""gc's side of the protocol that keeps it from deleting what a push relies on (app/registry/gc_runs.py).

One run at a time, decided by the store: the announcement is written create-only, so of two runs started
together exactly one proceeds and the other stops. A live run rewrites its announcement every HEARTBEAT_SECONDS
(a thread beside the run, whatever it is doing); an announcement untouched for STALE_SECONDS belongs to a run
that died (killed with SIGKILL, its machine gone). A new run takes such a one over: of several, the one whose
create-only take-over mark lands deletes it and announces itself. Everything the run wrote is removed when it
ends, however it ends (SIGTERM and Ctrl-C included), the announcement last; a claim a replica writes just after
that (before its watch sees the end) is removed by the next run.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from app import layout
from app.registry.gc_runs import (
    HEARTBEAT_SECONDS,
    PHASE_ANNOUNCED,
    PHASE_MARKED,
    PRESENCE_STALE_SECONDS,
    STALE_SECONDS,
    parse_run,
)
from app.storage import ObjectExists, Storage
from app.tools.inventory import Progress

# The most gc waits for the participants' acknowledgements (it goes on as soon as every live one has given it):
# the service's longest trust in what it checked before plus its watch, and longer than a push.
DEFAULT_SETTLE_SECONDS = 660.0
DEFAULT_MARK_SECONDS = 900.0
ACK_POLL_SECONDS = 0.5
ABANDON_AFTER_SECONDS = 2 * HEARTBEAT_SECONDS  # a run silent this long was killed: `gc --abandon` may clear it
TAKE_OVER = "taken-over"  # under a dead run's state: the create-only mark of the run that takes it over


class GcRunning(Exception):
    """Another gc run is announced on this bucket."""


@dataclass(frozen=True)
class RunTiming:
    settle_seconds: float = DEFAULT_SETTLE_SECONDS  # after announcing, before listing
    mark_seconds: float = DEFAULT_MARK_SECONDS  # after marking, before condemning


@dataclass(frozen=True)
class LiveParticipants:
    """Who may be writing now: what a multipart upload needs to be left alone (app/tools/gc.py)."""

    alive: frozenset[str]
    since: float | None  # a multipart upload begun before this belongs to none of them

    def abandoned(self, writers: set[str], started: float, skew: float) -> bool:
        """Did the multipart upload begun at `started` (by one of `writers`, as recorded) lose its writer?"""
        if writers:
            return not writers & self.alive
        return self.since is not None and started < self.since - skew


class GcRun:
    def __init__(self, storage: Storage, timing: RunTiming, progress: Progress) -> None:
        self.storage = storage
        self.timing = timing
        self.progress = progress
        self.id = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(4)}"
        self.phase = PHASE_ANNOUNCED
        self.silent: set[str] = set()  # participants that never answered a bounded wait: presumed dead

    def announce(self) -> None:
        """Announce this run, create-only: another live run's announcement stops it; a dead one's is taken over."""
        if self._announce_create_only():
            return
        found = self.storage.read_small(layout.GC_RUN)
        other = parse_run(found[0]) if found else None
        age = time.time() - (found[1].last_modified or 0) if found else 0.0
        if found is not None and other is not None and age < STALE_SECONDS:
            raise GcRunning(f"gc run {other[0]} is under way (its heartbeat {age:.0f}s ago); one run at a time")
        if other is not None:
            self._take_over(other[0], age)
        elif found is not None:  # not a run's announcement at all: nothing to heed
            self.storage.delete(layout.GC_RUN)
        if not self._announce_create_only():
            raise GcRunning("another gc run announced itself just now; one run at a time")

    def _announce_create_only(self) -> bool:
        try:
            self.write_phase(PHASE_ANNOUNCED, create=True)
        except ObjectExists:
            return False
        self.clear_every_state()
        return True

    def _take_over(self, dead: str, age: float) -> None:
        """Of the runs that found `dead` dead, the one whose mark lands removes its announcement."""
        try:
            self.storage.put_bytes(layout.gc_state(dead) + TAKE_OVER, self.id.encode(), layout.TEXT, if_absent=True)
        except ObjectExists:
            raise GcRunning(f"another gc run is taking over from run {dead}, which died; one run at a time") from None
        self.progress.say(f"taking over from gc run {dead}, whose heartbeat stopped {age:.0f}s ago")
        self.storage.delete(layout.GC_RUN)

    def settle(self) -> None:
        """Wait until every live participant has seen the run and finished what it was doing (at most the bound)."""
        self.progress.say(f"run {self.id} announced")
        self.wait_for(PHASE_ANNOUNCED, self.timing.settle_seconds)

    def wait_for(self, phase: str, bound: float) -> None:
        """Until each participant whose presence is fresh has acknowledged `phase`, or `bound` seconds went by."""
        deadline = time.monotonic() + bound
        said = ""
        while True:
            waiting = self.unready(phase)
            if not waiting:
                return
            names = ", ".join(sorted(waiting))
            if time.monotonic() >= deadline:
                self.progress.say(f"going on after {bound:.0f}s without the acknowledgement of: {names}")
                if bound > 0:
                    self.silent |= waiting  # a live participant reads the announcement every few seconds
                return
            if names != said:
                self.progress.say(f"waiting for {len(waiting)} participant(s) to acknowledge the run: {names}")
                said = names
            time.sleep(ACK_POLL_SECONDS)

    def unready(self, phase: str) -> set[str]:
        """Participants (replicas, copy, sync) alive by their presence that have not acknowledged `phase` yet; an
        idle one is ready (it reads the announcement, after rewriting its presence, before relying on anything)."""
        prefix = layout.gc_acks(self.id, phase)
        acked = {key.removeprefix(prefix) for key in self.storage.list(prefix)}
        busy = {key for key, presence in self.presences().items() if presence.get("idle") is not True}
        return busy - acked

    def presences(self) -> dict[str, dict[str, object]]:
        """The participants whose presence is fresh, with what it says."""
        found = {}
        for key in self.storage.list(layout.GC_PARTICIPANTS):
            read = self.storage.read_small(key)
            if read is not None and time.time() - (read[1].last_modified or 0) < PRESENCE_STALE_SECONDS:
                found[key.removeprefix(layout.GC_PARTICIPANTS)] = _parsed(read[0])
        return found

    def live_participants(self) -> LiveParticipants:
        """The participants alive (a fresh presence, unless silent through the whole of a bounded wait), and when
        the longest-running of them started (wall clock; None if one does not say)."""
        presences = {key: presence for key, presence in self.presences().items() if key not in self.silent}
        starts = [_number(presence, "started") for presence in presences.values()]
        since = None if None in starts else min((start for start in starts if start is not None), default=time.time())
        return LiveParticipants(frozenset(presences), since)

    def write_phase(self, phase: str, *, create: bool = False) -> None:
        """Write (or rewrite, as the heartbeat does) this run's announcement in `phase`."""
        self.phase = phase
        document = json.dumps({"id": self.id, "phase": phase}).encode()
        self.storage.put_bytes(layout.GC_RUN, document, layout.JSON, layout.MUTABLE_CACHE, if_absent=create)

    def heartbeat(self, stop: threading.Event) -> None:
        """Rewrite the announcement every HEARTBEAT_SECONDS until `stop`, unless it is no longer this run's."""
        while not stop.wait(HEARTBEAT_SECONDS):
            with contextlib.suppress(Exception):  # a missed beat is not fatal: STALE_SECONDS spans several
                found = self.storage.read_small(layout.GC_RUN)
                if found is None or (parse_run(found[0]) or ("",))[0] != self.id:
                    return
                self.write_phase(self.phase)

    def condemn(self, candidates: list[str]) -> set[str]:
        """Mark the candidates, wait, condemn them; the ones a push claimed meanwhile (they stay)."""
        if not candidates:
            return set()
        self.storage.put_bytes(layout.gc_candidates(self.id), json.dumps(candidates).encode(), layout.JSON)
        self.write_phase(PHASE_MARKED)
        self.progress.say(f"{len(candidates)} candidates marked")
        self.wait_for(PHASE_MARKED, self.timing.mark_seconds)
        self.storage.put_bytes(layout.gc_condemned(self.id), json.dumps(candidates).encode(), layout.JSON)
        prefix = layout.gc_claims(self.id)
        return {key.removeprefix(prefix) for key in self.storage.list(prefix)}

    def end_if_announced(self) -> None:
        """End the run if the announcement is this run's (it may have been written when an interrupt came)."""
        found = self.storage.read_small(layout.GC_RUN)
        if found is not None and (parse_run(found[0]) or ("",))[0] == self.id:
            self.end()

    def end(self) -> None:
        for key in list(self.storage.list(layout.gc_state(self.id))):
            self.storage.delete(key)
        self.storage.delete(layout.GC_RUN)

    def clear_every_state(self) -> None:
        """What earlier runs left: a dead one's state, and claims a replica wrote before it saw that a run ended
        (the participants' presences are theirs)."""
        for key in list(self.storage.list(layout.GC_STATE)):
            if key != layout.GC_RUN and not key.startswith(layout.GC_PARTICIPANTS):
                self.storage.delete(key)


def _parsed(document: bytes) -> dict[str, object]:
    try:
        parsed = json.loads(document)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _number(presence: dict[str, object], field: str) -> float | None:
    value = presence.get(field)
    return float(value) if isinstance(value, int | float) else None


def abandon(storage: Storage, min_silence: float = ABANDON_AFTER_SECONDS) -> str:
    """Remove the announcement and state of a run whose heartbeat has been silent `min_silence` seconds (its gc
    was killed): replicas stop heeding it and the next run need not wait to take it over. Returns what was done."""
    found = storage.read_small(layout.GC_RUN)
    if found is None:
        return "no gc run is announced"
    announced = parse_run(found[0])
    silence = time.time() - (found[1].last_modified or 0)
    if announced is not None and silence < min_silence:
        raise GcRunning(
            f"gc run {announced[0]} is alive (its heartbeat {silence:.0f}s ago); stop that gc first, or wait "
            f"{min_silence - silence:.0f}s"
        )
    name = announced[0] if announced else "(unreadable)"
    for key in list(storage.list(layout.gc_state(name))) if announced else []:
        storage.delete(key)
    storage.delete(layout.GC_RUN)
    return f"abandoned gc run {name}, silent for {silence:.0f}s"


@contextlib.contextmanager
def announced_run(storage: Storage, timing: RunTiming, progress: Progress) -> Iterator[GcRun]:
    """A run from its announcement to its end, its heartbeat beating meanwhile. However it ends (a signal may
    arrive while it announces itself), a run that got announced removes its state and announcement."""
    run = GcRun(storage, timing, progress)
    stop = threading.Event()
    beating = threading.Thread(target=run.heartbeat, args=(stop,), name="gc-heartbeat", daemon=True)
    try:
        run.announce()
        beating.start()
        run.settle()
        yield run
    finally:
        stop.set()
        if beating.is_alive():
            beating.join()
        run.end_if_announced()
