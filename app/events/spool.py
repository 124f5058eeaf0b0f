"""Events not yet delivered when a process stops, kept on the staging volume until a process sends them.

Each endpoint has a directory `<staging>/events/<endpoint>/`; a stopping process writes its pending events there
as JSON lines, in order, under its own instance id (write to a temporary name, then rename, so a reader never
sees half a file). A process takes a file by renaming it to a name of its own first: on a staging volume shared
by replicas, exactly one of them sends each file.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from app.events.envelope import Event

SPOOL_DIR = "events"
SUFFIX = ".jsonl"

log = logging.getLogger("storj_registry.events")


class Spool:
    def __init__(self, staging_dir: Path, instance: str) -> None:
        self.root = staging_dir / SPOOL_DIR
        self.instance = instance

    def save(self, endpoint: str, events: list[Event]) -> None:
        """Write `events` for `endpoint`; a failure is logged (the events are then lost), never raised."""
        if not events:
            return
        directory = self.root / endpoint
        lines = "".join(json.dumps({"kind": e.kind, "repository": e.repository, "body": e.body}) + "\n" for e in events)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            temporary = directory / f".{self.instance}.tmp"
            temporary.write_text(lines, encoding="utf-8")
            os.replace(temporary, directory / f"{self.instance}{SUFFIX}")
        except OSError as exc:
            log.error("could not keep %d undelivered event(s) for %s: %s", len(events), endpoint, exc)
            return
        log.info("kept %d undelivered event(s) for %s in %s", len(events), endpoint, directory)

    def take(self, endpoint: str) -> list[Event]:
        """Every event other processes left for `endpoint`, oldest file first; the files are gone after."""
        directory = self.root / endpoint
        try:
            files = sorted(directory.glob(f"*{SUFFIX}"), key=_modified)
        except OSError:
            return []
        events: list[Event] = []
        for path in files:
            taken = directory / f".{path.stem}.taken-by-{self.instance}"
            try:
                os.rename(path, taken)
            except OSError:  # another replica took it first, or it vanished
                continue
            events += _read(taken)
            taken.unlink(missing_ok=True)
        return events


def _modified(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _read(path: Path) -> list[Event]:
    events = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        log.error("could not read kept events from %s: %s", path, exc)
        return []
    for number, line in enumerate(lines, start=1):
        try:
            item = json.loads(line)
            events.append(Event(str(item["kind"]), str(item["repository"]), dict(item["body"])))
        except (ValueError, KeyError, TypeError):
            log.warning("skipped a malformed kept event (%s line %d)", path.name, number)
    return events
