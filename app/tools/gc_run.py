"""gc's side of the protocol that keeps it from deleting what a push relies on (app/registry/gc_runs.py).

One run at a time: a run finds another's announcement and stops, unless that one is older than STALE_SECONDS
(its gc died; the announcement is rewritten at each phase, so a live run's is never that old). Everything the
run wrote is removed when it ends, however it ends, the announcement last; a claim a replica writes just after
that (before its watch sees the end) is removed by the next run.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass

from app import layout
from app.registry.gc_runs import PHASE_ANNOUNCED, PHASE_MARKED, parse_run
from app.storage import Storage
from app.tools.inventory import Progress

# The service's longest trust in what it checked before (known blobs vouched for from memory) plus its watch.
DEFAULT_SETTLE_SECONDS = 660.0
DEFAULT_MARK_SECONDS = 900.0  # longer than a push: from its blob checks to its manifest
STALE_SECONDS = 6 * 3600.0


class GcRunning(Exception):
    """Another gc run is announced on this bucket."""


@dataclass(frozen=True)
class RunTiming:
    settle_seconds: float = DEFAULT_SETTLE_SECONDS  # after announcing, before listing
    mark_seconds: float = DEFAULT_MARK_SECONDS  # after marking, before condemning


class GcRun:
    def __init__(self, storage: Storage, timing: RunTiming, progress: Progress) -> None:
        self.storage = storage
        self.timing = timing
        self.progress = progress
        self.id = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(4)}"

    def announce(self) -> None:
        found = self.storage.read_small(layout.GC_RUN)
        if found is not None:
            other = parse_run(found[0])
            age = time.time() - (found[1].last_modified or 0)
            if other is not None and age < STALE_SECONDS:
                raise GcRunning(f"gc run {other[0]} is under way (announced {age:.0f}s ago); one run at a time")
            self.progress.say(f"taking over from a run that died {age:.0f}s ago")
        self.clear_every_state()
        self.write_phase(PHASE_ANNOUNCED)

    def settle(self) -> None:
        self.progress.say(f"run {self.id} announced; waiting {self.timing.settle_seconds:.0f}s for every replica")
        time.sleep(self.timing.settle_seconds)

    def write_phase(self, phase: str) -> None:
        document = json.dumps({"id": self.id, "phase": phase}).encode()
        self.storage.put_bytes(layout.GC_RUN, document, layout.JSON, layout.MUTABLE_CACHE)

    def condemn(self, candidates: list[str]) -> set[str]:
        """Mark the candidates, wait, condemn them; the ones a push claimed meanwhile (they stay)."""
        if not candidates:
            return set()
        self.storage.put_bytes(layout.gc_candidates(self.id), json.dumps(candidates).encode(), layout.JSON)
        self.write_phase(PHASE_MARKED)
        self.progress.say(f"{len(candidates)} candidates marked; waiting {self.timing.mark_seconds:.0f}s for pushes")
        time.sleep(self.timing.mark_seconds)
        self.storage.put_bytes(layout.gc_condemned(self.id), json.dumps(candidates).encode(), layout.JSON)
        prefix = layout.gc_claims(self.id)
        return {key.removeprefix(prefix) for key in self.storage.list(prefix)}

    def end(self) -> None:
        for key in list(self.storage.list(layout.gc_state(self.id))):
            self.storage.delete(key)
        self.storage.delete(layout.GC_RUN)

    def clear_every_state(self) -> None:
        """What earlier runs left: a dead one's state, and claims a replica wrote before it saw that a run ended."""
        for key in list(self.storage.list(layout.GC_STATE)):
            if key != layout.GC_RUN:
                self.storage.delete(key)


@contextlib.contextmanager
def announced_run(storage: Storage, timing: RunTiming, progress: Progress) -> Iterator[GcRun]:
    run = GcRun(storage, timing, progress)
    run.announce()
    try:
        run.settle()
        yield run
    finally:
        run.end()
