"""What went wrong with the store, in a few words fit for a client's error message: no key, URL or credential.

The full fault (with the operation and the endpoint) goes to the service's log; a client pushing an image gets
this phrase in its 503, so "the registry's S3 keys are wrong" is not indistinguishable from "try again later".
"""

from __future__ import annotations

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

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


def describe(fault: BaseException) -> str:
    cause = fault.__cause__ or fault
    if isinstance(cause, ClientError):
        code = str(cause.response.get("Error", {}).get("Code", "unknown"))  # a HEAD's is only the status
        if code in REFUSED_CREDENTIALS or code == "403":
            return f"the S3 server refused the registry's credentials ({code})"
        if code in ("NoSuchBucket", "404"):
            return "the registry's bucket does not exist (NoSuchBucket)"
        return f"the S3 server answered {code}"
    if isinstance(cause, EndpointConnectionError | ConnectionClosedError):
        return "the registry cannot connect to its S3 endpoint"
    if isinstance(cause, ConnectTimeoutError | ReadTimeoutError):
        return "the registry's S3 endpoint did not answer in time"
    if isinstance(cause, OSError):
        return f"the registry's data directory failed ({cause.strerror or type(cause).__name__})"
    return "the storage backend failed"
