"""The audit log: every event as one JSON line (who did what, from where), whatever the endpoints filter."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from app.events.envelope import Event

log = logging.getLogger("storj_registry.events")


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = path.open("a", encoding="utf-8", buffering=1)  # line-buffered: a line is whole on disk

    def write(self, event: Event) -> None:
        """Append the event; a failing disk is logged, never passed on to the request that caused the event."""
        try:
            self.file.write(json.dumps({"kind": event.kind, **event.body}, separators=(",", ":")) + "\n")
        except OSError as exc:
            log.error("could not write the audit log %s: %s", self.path, exc)

    def close(self) -> None:
        self.file.close()
