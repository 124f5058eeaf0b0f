"""What the routes tell app.events: one call per change, with who made it (the authenticated caller) and from where.

Only this layer knows the request; the registry below it knows what changed. Each function builds the target of
one kind of event and publishes it; with no endpoint and no audit log configured they cost one attribute check.
"""

from __future__ import annotations

import json

from starlette.requests import Request

from app import layout
from app.events import Notifier, Origin, Target
from app.observability import request_id_var
from app.registry.formats import media_type_of
from app.registry.references import is_digest

MAX_USER_AGENT = 256


def manifest_pushed(request: Request, name: str, reference: str, digest: str, body: bytes) -> None:
    """A manifest stored by tag (the event names both tag and digest) or by digest."""
    media_type = media_type_of(request.headers.get("content-type"), json.loads(body))  # validated by the put
    tag = "" if is_digest(reference) else reference
    target = Target(name, digest, media_type, len(body), tag, content_url(request, name, "manifests", digest))
    publish(request, "manifest.push", target)


def manifest_deleted(request: Request, name: str, reference: str) -> None:
    """A manifest deleted by digest (its tags went with it), or one tag."""
    if is_digest(reference):
        publish(request, "manifest.delete", Target(name, digest=reference))
    else:
        publish(request, "tag.delete", Target(name, tag=reference))


def blob_pushed(request: Request, name: str, digest: str, size: int) -> None:
    url = content_url(request, name, "blobs", digest)
    publish(request, "blob.push", Target(name, digest, layout.OCTET_STREAM, size, url=url))


def blob_mounted(request: Request, name: str, digest: str, source: str, size: int | None = None) -> None:
    """A blob copied from `source` server-side: an explicit mount, or shared on a HEAD miss."""
    url = content_url(request, name, "blobs", digest)
    publish(request, "blob.mount", Target(name, digest, layout.OCTET_STREAM, size, url=url, from_repository=source))


def blob_deleted(request: Request, name: str, digest: str) -> None:
    publish(request, "blob.delete", Target(name, digest=digest))


def publish(request: Request, kind: str, target: Target) -> None:
    notifier: Notifier = request.app.state.notifier
    if notifier.enabled:
        notifier.publish(kind, target, origin_of(request))


def origin_of(request: Request) -> Origin:
    principal = getattr(request.state, "principal", None)
    client = request.client
    return Origin(
        actor=(principal.user or "") if principal is not None else "",
        request_id=request_id_var.get(),
        addr=f"{client.host}:{client.port}" if client else "",
        host=request.headers.get("host", ""),
        method=request.method,
        useragent=request.headers.get("user-agent", "")[:MAX_USER_AGENT],
    )


def content_url(request: Request, name: str, kind: str, digest: str) -> str:
    """Where the content can be fetched through this service (its external URL when one is configured)."""
    base = request.app.state.settings.service_url or str(request.base_url).rstrip("/")
    return f"{base}/v2/{name}/{kind}/{digest}"
