"""Authentication and authorization of the registry API.

`guard` runs before every route (an application-wide FastAPI dependency): routes under `/v2/` map to a
resource and an action (pull for GET/HEAD, push for writes and for every upload-session request, delete for
DELETE; the catalog is `registry:catalog:*`), everything else (`/auth/token`, health and metrics endpoints)
is left open. Handlers that touch a second repository ask `allowed()`, e.g. a cross-repository mount needs
pull on its source.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request

from app.auth.access import DELETE, PULL, PUSH
from app.auth.gate import ANONYMOUS, CATALOG_RESOURCE, Gate, Principal, Resource, client_address
from app.auth.ratelimit import UploadLimiter
from app.auth.tokens import REPOSITORY

__all__ = ["Gate", "Principal", "UploadLimiter", "allowed", "guard"]

API_PREFIX = "/v2/"
READ_METHODS = frozenset({"GET", "HEAD"})
UPLOAD_ROUTE_MARK = "/blobs/uploads"


async def guard(request: Request) -> AsyncIterator[None]:
    """Refuse the request unless its caller may do it; count upload bodies against the client's limit."""
    template = _route_template(request)
    if not template.startswith(API_PREFIX):
        yield
        return
    gate: Gate = request.app.state.gate
    if gate.enabled:
        principal = await gate.identify(request)
        gate.authorize(request, principal, target_of(request, template))
        request.state.principal = principal
    if UPLOAD_ROUTE_MARK in template and request.method not in READ_METHODS:
        limiter: UploadLimiter = request.app.state.upload_limiter
        with limiter.hold(client_address(request)):
            yield
    else:
        yield


def allowed(request: Request, repository: str, action: str) -> bool:
    """Whether the caller of `request` may do `action` on another `repository` (e.g. pull a mount source)."""
    gate: Gate = request.app.state.gate
    principal: Principal = getattr(request.state, "principal", ANONYMOUS)
    return gate.allows(principal, Resource(REPOSITORY, repository, action))


def target_of(request: Request, template: str) -> Resource | None:
    """The resource a `/v2/` route touches; None where any authenticated caller will do (`/v2/` itself)."""
    if template == "/v2/_catalog":
        return CATALOG_RESOURCE
    name = request.path_params.get("name")
    if name is None:
        return None
    if UPLOAD_ROUTE_MARK in template:
        return Resource(REPOSITORY, name, PUSH)
    if request.method in READ_METHODS:
        return Resource(REPOSITORY, name, PULL)
    return Resource(REPOSITORY, name, DELETE if request.method == "DELETE" else PUSH)


def _route_template(request: Request) -> str:
    """The matched route's path pattern (the request path itself if none: fail closed, not open)."""
    return getattr(request.scope.get("route"), "path", request.url.path)
