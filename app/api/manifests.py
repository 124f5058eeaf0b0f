"""`/v2/<name>/manifests/<reference>`: GET/HEAD, PUT and DELETE by tag or digest."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app import layout
from app.api import notify
from app.api.deps import RegistryDep
from app.errors import RegistryError, Unsupported
from app.registry.references import check_name, check_reference

router = APIRouter()


class ManifestTooLarge(RegistryError):
    status, code = 413, "SIZE_INVALID"


async def read_limited(request: Request, limit: int) -> bytes:
    """The whole request body, refused with 413 as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ManifestTooLarge("manifest exceeds the size limit", detail={"limit": limit})
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ManifestTooLarge("manifest exceeds the size limit", detail={"limit": limit})
    return bytes(body)


@router.api_route("/v2/{name:path}/manifests/{reference}", methods=["GET", "HEAD"])
async def get_manifest(name: str, reference: str, request: Request, registry: RegistryDep) -> Response:
    check_name(name)
    check_reference(reference)
    stored = await registry.manifests.get(name, reference)
    headers = {
        "Content-Type": stored.media_type,
        "Docker-Content-Digest": stored.digest,
        "ETag": f'"{stored.digest}"',
        "Content-Length": str(len(stored.body)),
    }
    body = b"" if request.method == "HEAD" else stored.body
    return Response(body, headers=headers, media_type=stored.media_type)


@router.put("/v2/{name:path}/manifests/{reference}")
async def put_manifest(name: str, reference: str, request: Request, registry: RegistryDep) -> Response:
    check_name(name)
    check_reference(reference)
    body = await read_limited(request, registry.settings.max_manifest_bytes)
    result = await registry.manifests.put(name, reference, body, request.headers.get("content-type"))
    notify.manifest_pushed(request, name, reference, result.digest, body)
    headers = {"Location": f"/{layout.manifest(name, result.digest)}", "Docker-Content-Digest": result.digest}
    if result.subject:
        headers["OCI-Subject"] = result.subject
    return Response(status_code=201, headers=headers)


@router.delete("/v2/{name:path}/manifests/{reference}")
async def delete_manifest(name: str, reference: str, request: Request, registry: RegistryDep) -> Response:
    check_name(name)
    check_reference(reference)
    if not registry.settings.delete_enabled:
        raise Unsupported("deletes are disabled on this registry")
    await registry.manifests.delete(name, reference)
    notify.manifest_deleted(request, name, reference)
    return Response(status_code=202)
