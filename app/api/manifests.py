"""`/v2/<name>/manifests/<reference>`: GET/HEAD, PUT and DELETE by tag or digest."""

from __future__ import annotations

from email.utils import formatdate

from fastapi import APIRouter, Depends, Request, Response

from app import layout
from app.api.deps import RegistryDep, event_origin
from app.errors import ManifestUnknown, RegistryError, TagInvalid, Unsupported
from app.registry.references import check_digest, check_name, check_reference, check_tag

router = APIRouter(dependencies=[Depends(event_origin)])


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


def readable_reference(name: str, reference: str) -> str:
    """A GET or HEAD of a name no tag can have finds no manifest: 404 MANIFEST_UNKNOWN, as distribution answers
    and the conformance suites require (`.INVALID_MANIFEST_NAME`). Only a PUT of such a tag is a 400."""
    try:
        return check_reference(reference)
    except TagInvalid:
        raise ManifestUnknown("manifest unknown", detail={"name": name, "reference": reference[:300]}) from None


@router.api_route("/v2/{name:path}/manifests/{reference}", methods=["GET", "HEAD"])
async def get_manifest(name: str, reference: str, request: Request, registry: RegistryDep) -> Response:
    check_name(name)
    readable_reference(name, reference)
    stored = await registry.manifests.get(name, reference)
    headers = {
        "Content-Type": stored.media_type,
        "Docker-Content-Digest": stored.digest,
        "ETag": f'"{stored.digest}"',
        "Content-Length": str(len(stored.body)),
    }
    if stored.last_modified is not None:  # as a static server over the bucket sends it
        headers["Last-Modified"] = formatdate(stored.last_modified, usegmt=True)
    body = b"" if request.method == "HEAD" else stored.body
    return Response(body, headers=headers, media_type=stored.media_type)


@router.put("/v2/{name:path}/manifests/{reference}")
async def put_manifest(name: str, reference: str, request: Request, registry: RegistryDep) -> Response:
    check_name(name)
    check_reference(reference)
    tags = [check_tag(tag) for tag in request.query_params.getlist("tag")]  # end-7b: more tags, one push
    named = request.query_params.get("digest")
    body = await read_limited(request, registry.settings.max_manifest_bytes)
    result = await registry.manifests.put(
        name,
        reference,
        body,
        request.headers.get("content-type"),
        tags=tags,
        named=check_digest(named) if named is not None else None,
    )
    headers = {"Location": f"/{layout.manifest(name, result.digest)}", "Docker-Content-Digest": result.digest}
    if result.subject:
        headers["OCI-Subject"] = result.subject
    response = Response(status_code=201, headers=headers)
    for tag in result.tags:  # one OCI-Tag header per tag stored, so the client knows each one landed
        response.headers.append("OCI-Tag", tag)
    return response


@router.delete("/v2/{name:path}/manifests/{reference}")
async def delete_manifest(name: str, reference: str, request: Request, registry: RegistryDep) -> Response:
    check_name(name)
    check_reference(reference)
    if not registry.settings.delete_enabled:
        raise Unsupported("deletes are disabled on this registry (set REGISTRY_DELETE_ENABLED=true to allow them)")
    await registry.manifests.delete(name, reference)
    return Response(status_code=202)
