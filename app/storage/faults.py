"""What went wrong with the store, in a few words fit for a client's error message: no key, URL or credential.

The same sentence goes to the service's log, to `/readyz` and into a client's 503, so "the registry's S3 keys are
wrong" is not indistinguishable from "try again later". `notices` keeps one outage from filling the log: each
cause is told once (again after `REMIND_SECONDS`, or once the store has answered in between).
"""

from __future__ import annotations

import threading
import time

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from app.storage.base import StorageFault

REFUSED_CREDENTIALS = frozenset(
    {
        "AccessDenied",
        "AuthorizationHeaderMalformed",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidToken",
        "SignatureDoesNotMatch",
    }
)
REMIND_SECONDS = 900.0
# The service's one warning for a store fault, whichever part of it meets the fault first.
UNUSABLE = "the store is not usable: %s; serving anyway: /readyz answers 503 and pushes fail until it is"


class MissingBucket(StorageFault):
    """The S3 server has no bucket of the configured name."""

    def __init__(self, bucket: str) -> None:
        super().__init__(f"the bucket {bucket} does not exist")
        self.bucket = bucket


def describe(fault: BaseException) -> str:
    if isinstance(fault, MissingBucket):
        return str(fault)
    cause = fault.__cause__ or fault
    if isinstance(cause, ClientError):
        return _answered(cause)
    if isinstance(cause, EndpointConnectionError | ConnectionClosedError):
        return "the registry cannot connect to its S3 endpoint"
    if isinstance(cause, ConnectTimeoutError | ReadTimeoutError):
        return "the registry's S3 endpoint did not answer in time"
    if isinstance(cause, OSError):
        return f"the registry's data directory failed ({cause.strerror or type(cause).__name__})"
    return "the storage backend failed"


def _answered(error: ClientError) -> str:
    details = error.response.get("Error", {})
    code = str(details.get("Code", "unknown"))  # a HEAD's is only the status
    if code in REFUSED_CREDENTIALS or code == "403":
        return (
            f"the S3 server refused the registry's credentials ({code}): check REGISTRY_S3_ACCESS_KEY and _SECRET_KEY"
        )
    if code in ("NoSuchBucket", "404"):
        bucket = details.get("BucketName")
        return f"the bucket {bucket} does not exist" if bucket else "the registry's bucket does not exist"
    return f"the S3 server answered {code}"


class FaultNotices:
    """Which store problems the log has told already (thread-safe: faults arise in worker threads)."""

    def __init__(self, remind_seconds: float = REMIND_SECONDS) -> None:
        self.remind_seconds = remind_seconds
        self._told: dict[str, float] = {}
        self._lock = threading.Lock()

    def first(self, cause: str) -> bool:
        """True when `cause` should be told now (and is then counted as told)."""
        now = time.monotonic()
        with self._lock:
            told = self._told.get(cause)
            if told is not None and now - told < self.remind_seconds:
                return False
            self._told[cause] = now
            return True

    def clear(self) -> None:
        """The store answered: the next fault, even of a cause told before, is news."""
        with self._lock:
            self._told.clear()


notices = FaultNotices()
