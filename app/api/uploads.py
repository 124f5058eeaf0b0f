"""`/v2/<name>/blobs/uploads/`: sessions, chunks, completion, status, cancel, and cross-repository mounts."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from app import layout
from app.api import notify
from app.api.deps import RegistryDep, decimal
from app.api.ranges import parse_content_range
from app.auth import allowed
from app.auth.access import PULL
from app.auth.gate import client_address
from app.errors import DigestInvalid
from app.lifecycle import accepting_uploads
from app.registry import Registry
from app.registry.limits import BodyRefused, StagingLimits
from app.registry.references import DIGEST_RE, algorithm_of, check_digest, check_name, is_name
from app.registry.uploads import Upload

router = APIRouter()


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


def chunk_bounds(request: Request) -> tuple[int | None, int | None]:
    """Start and length of the body from Content-Range / Content-Length (None when the client sent neither)."""
    content_range = request.headers.get("content-range")
    length = decimal(request.headers.get("content-length"))
    if content_range:
        start, end = parse_content_range(content_range)
        return start, end - start + 1
    return None, length


async def receive(registry: Registry, upload: Upload, request: Request) -> int:
    start, length = chunk_bounds(request)
    limits: StagingLimits = request.app.state.staging_limits
    async with registry.uploads.lock(upload):
        try:
            body = limits.watch(request.stream(), registry.uploads.size(upload), length)
            return await registry.uploads.append(upload, body, start, length)
        except BodyRefused:  # too large, disk full or stalled: the session cannot finish, free its disk
            await registry.uploads.discard(upload)
            raise


@router.post("/v2/{name:path}/blobs/uploads/", dependencies=[Depends(accepting_uploads)])
@router.post("/v2/{name:path}/blobs/uploads", dependencies=[Depends(accepting_uploads)])
async def start_upload(name: str, request: Request, registry: RegistryDep) -> Response:
    check_name(name)
    params = request.query_params
    mount, source = params.get("mount"), params.get("from")
    mountable = mount and source and DIGEST_RE.fullmatch(mount) and is_name(source) and source != name
    mountable = mountable and allowed(request, source, PULL)  # else a normal session: never leak the blob
    if mountable and await registry.blobs.mount(name, mount, source):
        notify.blob_mounted(request, name, mount, source)
        return blob_created(name, mount)
    digest = params.get("digest")
    if digest is not None:
        check_digest(digest)
    request.app.state.staging_limits.check_free()
    upload = await registry.client_sessions.open(name, client_address(request))
    if digest is not None:
        try:
            await receive(registry, upload, request)
            size = await registry.blobs.commit(upload, digest)
        except Exception:  # the client never learnt this session's id, so nobody could resume it
            await registry.uploads.discard(upload)
            raise
        notify.blob_pushed(request, name, digest, size)
        return blob_created(name, digest)
    return Response(status_code=202, headers=progress_headers(upload, 0))


@router.patch("/v2/{name:path}/blobs/uploads/{upload_id}")
async def upload_chunk(name: str, upload_id: str, request: Request, registry: RegistryDep) -> Response:
    check_name(name)
    upload = registry.uploads.get(name, upload_id)
    size = await receive(registry, upload, request)
    return Response(status_code=202, headers=progress_headers(upload, size))


@router.put("/v2/{name:path}/blobs/uploads/{upload_id}")
async def finish_upload(name: str, upload_id: str, request: Request, registry: RegistryDep) -> Response:
    check_name(name)
    digest = request.query_params.get("digest")
    if digest and registry.uploads.verified_digest(name, upload_id) == digest:
        return blob_created(name, digest)  # the retry of a final PUT already answered 201 (its answer was lost)
    upload = registry.uploads.get(name, upload_id)
    if not digest:
        raise DigestInvalid("digest query parameter is required to finish an upload")
    check_digest(digest)
    if not await resends_staged_body(registry, upload, request, digest):
        await receive(registry, upload, request)
    size = await registry.blobs.commit(upload, digest)
    notify.blob_pushed(request, name, digest, size)
    return blob_created(name, digest)


async def resends_staged_body(registry: Registry, upload: Upload, request: Request, digest: str) -> bool:
    """Is this final PUT the retry of one whose body was staged but whose commit failed (store down, crash)?

    Then the staged bytes already match the digest and the body is the same bytes again: appending them would
    fail the digest check and lose the upload. Any other body appended to matching bytes could never match.
    """
    has_body = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
    return has_body and await registry.uploads.staged_digest(upload, algorithm_of(digest)) == digest


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
