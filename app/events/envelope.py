"""Events in the envelope of distribution's notifications, so receivers written for it work unchanged.

A request to a receiver carries `{"events": [...]}` with Content-Type
`application/vnd.docker.distribution.events.v2+json`. Each event has an `id`, a `timestamp`, an `action` (push,
mount or delete), a `target` (mediaType, digest, size and length, repository, url, tag, fromRepository),
the `request` that caused it (id, addr, host, method, useragent), the `actor` (the authenticated user or
workload) and the `source` (this process). Deletes name only what was deleted, as distribution's do.
"""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

MEDIA_TYPE = "application/vnd.docker.distribution.events.v2+json"

# Kinds of event (what endpoints filter on) and the distribution action each is sent as.
ACTIONS = {
    "manifest.push": "push",
    "blob.push": "push",
    "blob.mount": "mount",
    "manifest.delete": "delete",
    "tag.delete": "delete",
    "blob.delete": "delete",
    "gc.delete": "delete",
}
KINDS = frozenset(ACTIONS)


@dataclass(frozen=True)
class Target:
    """What the event is about."""

    repository: str
    digest: str = ""
    media_type: str = ""
    size: int | None = None
    tag: str = ""
    url: str = ""
    from_repository: str = ""

    def record(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest}
        if self.size is not None:
            fields |= {"size": self.size, "length": self.size}
        fields |= {"repository": self.repository, "url": self.url, "tag": self.tag}
        fields["fromRepository"] = self.from_repository
        return {key: value for key, value in fields.items() if value != ""}


@dataclass(frozen=True)
class Origin:
    """Who caused the event and from where: the HTTP request, or a tool such as gc (no request)."""

    actor: str = ""
    request_id: str = ""
    addr: str = ""
    host: str = ""
    method: str = ""
    useragent: str = ""

    def request(self) -> dict[str, str]:
        return {
            "id": self.request_id,
            "addr": self.addr,
            "host": self.host,
            "method": self.method,
            "useragent": self.useragent,
        }


@dataclass(frozen=True)
class Event:
    """One event: its kind and repository (what filters look at) and the JSON object receivers get."""

    kind: str
    repository: str
    body: dict[str, Any]


class Source:
    """This process, as events name it: the host and an id that changes with every start."""

    def __init__(self) -> None:
        self.record = {"addr": socket.gethostname(), "instanceID": str(uuid.uuid4())}

    def event(self, kind: str, target: Target, origin: Origin) -> Event:
        body = {
            "id": str(uuid.uuid4()),
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "action": ACTIONS[kind],
            "target": target.record(),
            "request": origin.request(),
            "actor": {"name": origin.actor} if origin.actor else {},
            "source": self.record,
        }
        return Event(kind, target.repository, body)


def envelope(events: list[Event]) -> dict[str, Any]:
    return {"events": [event.body for event in events]}
