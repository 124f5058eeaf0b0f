"""Events for everything that watches the registry: receivers over HTTP, and an optional audit log.

The API layer calls `Notifier.publish` once per change (a manifest pushed by tag or digest, a blob pushed,
mounted or shared, a manifest, tag or blob deleted); `storj-registry gc` does for what it removes. Each endpoint
of REGISTRY_EVENTS_ENDPOINTS that wants the event (by kind and repository patterns) queues it, and its own task
delivers it in distribution's envelope (app.events.envelope, app.events.delivery). Publishing never waits on a
receiver, so a slow or dead one cannot slow or fail a push.
"""

from __future__ import annotations

import asyncio
import time
from fnmatch import fnmatchcase

from app.events.audit import AuditLog
from app.events.delivery import EndpointQueue
from app.events.envelope import KINDS, Origin, Source, Target
from app.events.spool import Spool
from app.settings import Settings, SettingsError

__all__ = ["Notifier", "Origin", "Target"]

FLUSH_POLL_SECONDS = 0.05


class Notifier:
    def __init__(self, settings: Settings) -> None:
        _check_kinds(settings)
        self.source = Source()
        spool = Spool(settings.staging_dir, self.source.record["instanceID"])
        self.endpoints = [EndpointQueue(config, spool) for config in settings.events_endpoints]
        self.audit = _open_audit_log(settings)

    @property
    def enabled(self) -> bool:
        return bool(self.endpoints) or self.audit is not None

    def publish(self, kind: str, target: Target, origin: Origin) -> None:
        """Record one event for the audit log and every endpoint that wants it; returns at once."""
        if not self.enabled:
            return
        event = self.source.event(kind, target, origin)
        if self.audit is not None:
            self.audit.write(event)
        for endpoint in self.endpoints:
            if endpoint.wants(event):
                endpoint.offer([event])

    def start(self) -> None:
        for endpoint in self.endpoints:
            endpoint.start()

    async def stop(self) -> None:
        """Stop the senders; undelivered events go to the staging volume for the next process."""
        for endpoint in self.endpoints:
            await endpoint.stop()
        if self.audit is not None:
            self.audit.close()

    async def deliver_then_stop(self, within: float) -> None:
        """For a short-lived tool (gc): try to deliver for `within` seconds, then keep the rest for the service."""
        self.start()
        deadline = time.monotonic() + within
        while any(endpoint.queue for endpoint in self.endpoints) and time.monotonic() < deadline:
            await asyncio.sleep(FLUSH_POLL_SECONDS)
        await self.stop()


def _check_kinds(settings: Settings) -> None:
    for endpoint in settings.events_endpoints:
        for pattern in endpoint.events:
            if not any(fnmatchcase(kind, pattern) for kind in KINDS):
                raise SettingsError(
                    f"invalid configuration:\n  REGISTRY_EVENTS_ENDPOINTS: endpoint {endpoint.name}: {pattern!r} "
                    f"matches no event kind (kinds: {', '.join(sorted(KINDS))})"
                )


def _open_audit_log(settings: Settings) -> AuditLog | None:
    if settings.events_audit_log is None:
        return None
    try:
        return AuditLog(settings.events_audit_log)
    except OSError as exc:
        raise SettingsError(f"invalid configuration:\n  REGISTRY_EVENTS_AUDIT_LOG: {exc}") from None
