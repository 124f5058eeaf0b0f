"""`/v2/<name>/blobs/uploads/`: sessions, chunks, completion, status, cancel, and cross-repository mounts."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from app import layout
from app.api.deps import RegistryDep, decimal, event_origin
from app.api.ranges import parse_content_range
from app.auth import allowed
from app.auth.access import PULL
from app.auth.gate import client_address
from app.errors import DigestInvalid
from app.lifecycle import accepting_uploads
from app.registry.references import DIGEST_RE, check_digest, check_name, is_name
from app.registry.uploads import Body, Upload

router = APIRouter(dependencies=[Depends(event_origin)])


def upload_location(upload: Upload) -> str:
    return f"/v2/{upload.name}/blobs/uploads/{upload.id}"


def progress_headers(upload: Upload, size: int) -> dict[str, str]:
    return {
        "Location": upload_location(upload),
        "Docker-Upload-UUID": upload.id,
        "Range": f"0-{max(size - 1, 0)}",
    }


def blob_created(name: str, digest: str) -> Response:
    headers = {"Location": f"/{layout.blob(name, digest)}", "Docker-Content-Digest": digest}
    return Response(status_code=201, headers=headers)


def incoming(request: Request) -> Body:
    """The request's body with what the client declared of it: Content-Range start, Content-Length."""
    content_range = request.headers.get("content-range")
    length = decimal(request.headers.get("content-length"))
    start = None
    if content_range:
        start, end = parse_content_range(content_range)
        length = end - start + 1
    present = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
    return Body(request.stream(), start, length, present)


@router.post("/v2/{name:path}/blobs/uploads/", dependencies=[Depends(accepting_uploads)])
@router.post("/v2/{name:path}/blobs/uploads", dependencies=[Depends(accepting_uploads)])
async def start_upload(name: str, request: Request, registry: RegistryDep) -> Response:
    check_name(name)
    params = request.query_params
    mount, source = params.get("mount"), params.get("from")
    mountable = mount and source and DIGEST_RE.fullmatch(mount) and is_name(source) and source != name
    mountable = mountable and allowed(request, source, PULL)  # else a normal session: never leak the blob
    if mountable and await registry.blobs.mount(name, mount, source):
        return blob_created(name, mount)
    digest = params.get("digest")
    if digest is not None:
        check_digest(digest)
    registry.uploads.check_free()
    upload = await registry.client_sessions.open(name, client_address(request))
    if digest is not None:
        try:
            await registry.blobs.finish_upload(name, upload.id, digest, incoming(request))
        except Exception:  # the client never learnt this session's id, so nobody could resume it
            await registry.uploads.discard(upload)
            raise
        return blob_created(name, digest)
    return Response(status_code=202, headers=progress_headers(upload, 0))


@router.patch("/v2/{name:path}/blobs/uploads/{upload_id}")
async def upload_chunk(name: str, upload_id: str, request: Request, registry: RegistryDep) -> Response:
    check_name(name)
    upload = registry.uploads.get(name, upload_id)
    size = await registry.uploads.receive(upload, incoming(request))
    return Response(status_code=202, headers=progress_headers(upload, size))


@router.put("/v2/{name:path}/blobs/uploads/{upload_id}")
async def finish_upload(name: str, upload_id: str, request: Request, registry: RegistryDep) -> Response:
    check_name(name)
    registry.uploads.find(name, upload_id)
    digest = request.query_params.get("digest")
    if not digest:
        raise DigestInvalid("digest query parameter is required to finish an upload")
    check_digest(digest)
    await registry.blobs.finish_upload(name, upload_id, digest, incoming(request))
    return blob_created(name, digest)


@router.get("/v2/{name:path}/blobs/uploads/{upload_id}")
async def upload_status(name: str, upload_id: str, registry: RegistryDep) -> Response:
    check_name(name)
    upload = registry.uploads.get(name, upload_id)
    return Response(status_code=204, headers=progress_headers(upload, registry.uploads.size(upload)))


@router.delete("/v2/{name:path}/blobs/uploads/{upload_id}")
async def cancel_upload(name: str, upload_id: str, registry: RegistryDep) -> Response:
    check_name(name)
    upload = registry.uploads.get(name, upload_id)
    await registry.uploads.cancel(upload)
    return Response(status_code=204)
