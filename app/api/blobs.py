"""`/v2/<name>/blobs/<digest>`: HEAD, GET (with Range, or a redirect to the public bucket), DELETE."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse

from app import layout
from app.api.deps import RegistryDep, event_origin
from app.api.ranges import parse_range
from app.auth import allowed
from app.auth.access import PULL, PUSH
from app.errors import Unsupported
from app.registry.blobs import SharingPolicy
from app.registry.references import check_digest, check_name

router = APIRouter(dependencies=[Depends(event_origin)])


class ShareSources(SharingPolicy):
    """Which repositories the caller may share blobs from on a HEAD miss, and the one a share came from.

    Copying a blob into the caller's repository hands them its bytes and writes to the bucket, so the caller
    needs push on its own repository (asked before anything is looked up: a caller without it learns nothing of
    other repositories, not even through the store's request counts) and pull on the source (as for
    `?mount=&from=`). Without auth, all is open. The registry asks just before it copies, so when the blob is then
    found, `approved` is where it came from.
    """

    def __init__(self, request: Request, name: str) -> None:
        self.request = request
        self.name = name
        self.approved = ""

    async def may_push(self) -> bool:
        return allowed(self.request, self.name, PUSH)

    async def may_pull(self, source: str) -> bool:
        if allowed(self.request, source, PULL):
            self.approved = source
            return True
        return False


@router.api_route("/v2/{name:path}/blobs/{digest}", methods=["GET", "HEAD"])
async def get_blob(name: str, digest: str, request: Request, registry: RegistryDep) -> Response:
    check_name(name)
    check_digest(digest)
    share = ShareSources(request, name) if request.method == "HEAD" and registry.settings.share_blobs else None
    info = await registry.blobs.require(name, digest, share)
    headers = {
        "Docker-Content-Digest": digest,
        "Content-Type": layout.OCTET_STREAM,
        "Accept-Ranges": "bytes",
        "ETag": f'"{digest}"',
        "Cache-Control": layout.MANIFEST_CACHE_IMMUTABLE,
    }
    public_url = registry.settings.public_url
    if public_url and request.method == "GET":
        await registry.blobs.publishing.settle(name, [digest])  # acknowledged, maybe not in the bucket yet
        return RedirectResponse(f"{public_url}/{layout.blob(name, digest)}", status_code=307, headers=headers)
    if request.method == "HEAD":
        return Response(headers={**headers, "Content-Length": str(info.size)})
    requested = request.headers.get("range")
    selected = parse_range(requested, info.size) if requested else None
    if selected is None:
        body = await registry.blobs.open(name, digest)
        return StreamingResponse(body, headers={**headers, "Content-Length": str(info.size)})
    start, end = selected
    body = await registry.blobs.open(name, digest, start, end)
    headers |= {"Content-Length": str(end - start + 1), "Content-Range": f"bytes {start}-{end}/{info.size}"}
    return StreamingResponse(body, status_code=206, headers=headers)


@router.delete("/v2/{name:path}/blobs/{digest}")
async def delete_blob(name: str, digest: str, request: Request, registry: RegistryDep) -> Response:
    check_name(name)
    check_digest(digest)
    if not registry.settings.delete_enabled:
        raise Unsupported("deletes are disabled on this registry (set REGISTRY_DELETE_ENABLED=true to allow them)")
    await registry.blobs.delete(name, digest)
    return Response(status_code=202)
