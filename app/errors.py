"""The OCI error model: one exception type carrying the spec's code and the HTTP status."""

from __future__ import annotations

from typing import Any


class RegistryError(Exception):
    """A client-visible failure, rendered as `{"errors":[{"code","message","detail"}]}`."""

    status = 400
    code = "UNSUPPORTED"

    def __init__(
        self,
        message: str = "",
        *,
        detail: Any = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message or self.code)
        self.message = message or self.code.lower().replace("_", " ")
        self.detail = detail
        self.headers = headers or {}
        if status is not None:
            self.status = status

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            error["detail"] = self.detail
        return {"errors": [error]}


class BlobUnknown(RegistryError):
    status, code = 404, "BLOB_UNKNOWN"


class BlobUploadInvalid(RegistryError):
    status, code = 400, "BLOB_UPLOAD_INVALID"


class BlobUploadUnknown(RegistryError):
    status, code = 404, "BLOB_UPLOAD_UNKNOWN"


class DigestInvalid(RegistryError):
    status, code = 400, "DIGEST_INVALID"


class ManifestBlobUnknown(RegistryError):
    status, code = 400, "MANIFEST_BLOB_UNKNOWN"


class ManifestInvalid(RegistryError):
    status, code = 400, "MANIFEST_INVALID"


class ManifestUnknown(RegistryError):
    status, code = 404, "MANIFEST_UNKNOWN"


class NameInvalid(RegistryError):
    status, code = 400, "NAME_INVALID"


class NameUnknown(RegistryError):
    status, code = 404, "NAME_UNKNOWN"


class SizeInvalid(RegistryError):
    status, code = 400, "SIZE_INVALID"


class TagInvalid(RegistryError):
    status, code = 400, "TAG_INVALID"


class PaginationInvalid(RegistryError):
    status, code = 400, "PAGINATION_NUMBER_INVALID"


class RangeInvalid(RegistryError):
    """A chunk that does not continue the upload, or an unsatisfiable blob Range (416)."""

    status, code = 416, "BLOB_UPLOAD_INVALID"


class RangeNotSatisfiable(RegistryError):
    """A blob read whose `Range` lies outside the blob (no spec code exists for it)."""

    status, code = 416, "RANGE_INVALID"


class Unauthorized(RegistryError):
    status, code = 401, "UNAUTHORIZED"


class Denied(RegistryError):
    status, code = 403, "DENIED"


class NameDenied(Denied):
    """A repository name this registry refuses, the reason in the message.

    Not NAME_INVALID: docker retries that code five times (about 50 s) before it shows the reason, while DENIED
    (like UNAUTHORIZED, UNSUPPORTED, TOOMANYREQUESTS and NAME_UNKNOWN) ends its push at once (moby's
    `retryOnError`, distribution/errors.go).
    """


class Unsupported(RegistryError):
    status, code = 405, "UNSUPPORTED"


class TooManyRequests(RegistryError):
    status, code = 429, "TOOMANYREQUESTS"


class StorageUnavailable(RegistryError):
    """The bucket could not be reached or refused the write; the client should retry later."""

    status, code = 503, "UNAVAILABLE"


class ShuttingDown(RegistryError):
    """This replica is draining before it stops; the client should start the upload again (on another replica)."""

    status, code = 503, "UNAVAILABLE"
