"""`/v2/` (the API version check), the catalog, and the error handlers that render OCI error JSON."""

from __future__ import annotations

import json
import logging

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException

from app.api.deps import RegistryDep, next_link, paginate, parse_page_size
from app.errors import RegistryError, StorageUnavailable, Unsupported
from app.metrics import STORAGE_FAULTS
from app.storage import StorageFault
from app.storage.faults import describe

API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}
RETRY_AFTER_SECONDS = "5"
log = logging.getLogger("storj_registry")

router = APIRouter()


@router.api_route("/v2/", methods=["GET", "HEAD"])
async def api_version() -> Response:
    return JSONResponse({}, headers=API_VERSION)


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.get("/v2/_catalog")
async def catalog(registry: RegistryDep, n: str | None = None, last: str | None = None) -> Response:
    size = parse_page_size(n)
    page, more = paginate(await registry.documents.catalog(), size, last)
    headers = {"Link": next_link("/v2/_catalog", size, page)} if more else {}
    return JSONResponse({"repositories": page}, headers=headers)


class ErrorJSON(JSONResponse):
    """OCI error JSON, ASCII-escaped: details echo client input, which may hold lone surrogates (`"\\ud800"` in a
    manifest) that no UTF-8 body can carry; escaped, they are valid JSON text like any other."""

    def render(self, content: object) -> bytes:
        return json.dumps(content, separators=(",", ":")).encode("ascii")


def error_response(error: RegistryError) -> JSONResponse:
    return ErrorJSON(error.body(), status_code=error.status, headers={**API_VERSION, **error.headers})


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RegistryError)
    async def registry_error(_: Request, exc: RegistryError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(StorageFault)
    async def storage_fault(request: Request, exc: StorageFault) -> JSONResponse:
        STORAGE_FAULTS.inc()
        log.warning("storage fault on %s %s: %s", request.method, request.url.path, exc)
        error = StorageUnavailable(
            f"the storage backend is unavailable: {describe(exc)}; retry later",
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )
        return error_response(error)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 405:
            return error_response(Unsupported("method not allowed on this endpoint"))
        if exc.status_code == 404:
            return error_response(Unsupported("no such endpoint", status=404))
        return error_response(RegistryError(str(exc.detail), status=exc.status_code))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(RegistryError("invalid request parameters", detail=str(exc.errors())[:500]))
