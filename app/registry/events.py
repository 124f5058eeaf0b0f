"""What the registry tells app.events: one call per change, made where the change happens, whatever the way in.

Who made the change (the authenticated caller, the request) is not the registry's business: the way in sets it
for the task at hand (`ORIGIN`: the HTTP layer per request, `copy` and `sync` once), and every event of that task
carries it. Where the content can be fetched is the service's configured external URL (`REGISTRY_SERVICE_URL`),
never a client's `Host` header; without one, events name no URL.
"""

from __future__ import annotations

from contextvars import ContextVar

from app import layout
from app.events import Notifier, Origin, Target

NO_ORIGIN = Origin()
ORIGIN: ContextVar[Origin] = ContextVar("registry_event_origin", default=NO_ORIGIN)


class RegistryEvents:
    def __init__(self, notifier: Notifier, service_url: str | None) -> None:
        self.notifier = notifier
        self.service_url = service_url.rstrip("/") if service_url else None

    def manifest_pushed(self, name: str, tag: str, digest: str, media_type: str, size: int) -> None:
        """A manifest stored by tag (the event names both tag and digest) or by digest (`tag` empty)."""
        url = self._url(name, "manifests", digest)
        self._publish("manifest.push", Target(name, digest, media_type, size, tag, url))

    def manifest_deleted(self, name: str, digest: str) -> None:
        self._publish("manifest.delete", Target(name, digest=digest))

    def tag_deleted(self, name: str, tag: str) -> None:
        self._publish("tag.delete", Target(name, tag=tag))

    def blob_pushed(self, name: str, digest: str, size: int) -> None:
        url = self._url(name, "blobs", digest)
        self._publish("blob.push", Target(name, digest, layout.OCTET_STREAM, size, url=url))

    def blob_mounted(self, name: str, digest: str, source: str, size: int | None = None) -> None:
        """A blob copied from `source` server-side: an explicit mount, or shared on a HEAD miss or by `copy`."""
        url = self._url(name, "blobs", digest)
        target = Target(name, digest, layout.OCTET_STREAM, size, url=url, from_repository=source)
        self._publish("blob.mount", target)

    def blob_deleted(self, name: str, digest: str) -> None:
        self._publish("blob.delete", Target(name, digest=digest))

    def _publish(self, kind: str, target: Target) -> None:
        if self.notifier.enabled:
            self.notifier.publish(kind, target, ORIGIN.get())

    def _url(self, name: str, folder: str, digest: str) -> str:
        return f"{self.service_url}/v2/{name}/{folder}/{digest}" if self.service_url else ""
