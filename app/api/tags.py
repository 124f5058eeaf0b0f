"""`/v2/<name>/tags/list` with `n`/`last` paging, and `/v2/<name>/referrers/<digest>`."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from app import layout
from app.api.deps import RegistryDep, next_link, paginate, parse_page_size
from app.errors import NameUnknown
from app.registry.references import check_digest, check_name

router = APIRouter()


@router.get("/v2/{name:path}/tags/list")
async def list_tags(name: str, registry: RegistryDep, n: str | None = None, last: str | None = None) -> Response:
    check_name(name)
    size = parse_page_size(n)
    tags = await registry.documents.tags(name)
    if tags is None:
        raise NameUnknown("repository name not known to registry", detail={"name": name})
    page, more = paginate(tags, size, last)
    headers = {"Link": next_link(f"/{layout.tags_list(name)}", size, page)} if more else {}
    return JSONResponse({"name": name, "tags": page}, headers=headers)


@router.get("/v2/{name:path}/referrers/{digest}")
async def list_referrers(name: str, digest: str, registry: RegistryDep, artifactType: str | None = None) -> Response:
    check_name(name)
    check_digest(digest)
    index = await registry.documents.referrers(name, digest)
    headers = {}
    if artifactType:
        index["manifests"] = [m for m in index["manifests"] if m.get("artifactType") == artifactType]
        headers["OCI-Filters-Applied"] = "artifactType"
    return JSONResponse(index, headers=headers, media_type=layout.OCI_INDEX)
