"""What operators see: one access-log line and request metrics per request, log formats, storage call metrics.

The request middleware is plain ASGI (no `BaseHTTPMiddleware`) so upload bodies stream through it untouched; it
only counts their bytes. Every label and logged field that comes from the client is either checked against the
spec's grammar or taken from the route table, which keeps metric cardinality bounded and logs free of junk.
Headers are never logged, so credentials (`Authorization`) cannot leak into logs.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import parse_qsl

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.metrics import HTTP_REQUEST_SECONDS, HTTP_REQUESTS, STORAGE_ERRORS, STORAGE_REQUESTS, STORAGE_RETRIES
from app.registry.references import DIGEST_RE, TAG_RE, is_name
from app.storage import Storage, StorageFault
from app.storage.faults import UNUSABLE, describe, notices
from app.storage.filesystem import FilesystemStorage
from app.storage.s3 import S3Storage

LogFormat = Literal["text", "json"]

REQUEST_ID_HEADER = "X-Request-Id"
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+=/-]{0,127}")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"
# Probes and scrapes arrive every few seconds: logged only at DEBUG so they do not drown the pushes.
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that went away before the response
# S3 answers that are part of normal operation: an absent key, a create-only write that found the key.
EXPECTED_S3_STATUSES = frozenset({304, 404, 412})

access_log = logging.getLogger("storj_registry.access")
request_id_var: ContextVar[str] = ContextVar("request_id", default="")


class RequestObserver:
    """ASGI middleware: request id, access-log line, request counter and duration histogram."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = _Exchange(scope)
        token = request_id_var.set(exchange.request_id)
        try:
            await self.app(scope, exchange.counting_receive(receive), exchange.tagging_send(send))
        except ClientDisconnect:
            exchange.status = exchange.status or CLIENT_CLOSED_REQUEST
        except BaseException:
            exchange.status = exchange.status or 500
            raise
        finally:
            exchange.record()
            request_id_var.reset(token)


class _Exchange:
    """One request and its response, as seen from outside the application."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.started = time.perf_counter()
        self.request_id = _request_id(scope)
        self.status = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.response_digest = ""

    def counting_receive(self, receive: Receive) -> Receive:
        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                self.bytes_in += len(message.get("body", b""))
            return message

        return wrapped

    def tagging_send(self, send: Send) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]
                headers = list(message.get("headers", []))
                self.response_digest = _header(headers, b"docker-content-digest")
                headers.append((REQUEST_ID_HEADER.lower().encode(), self.request_id.encode()))
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body":
                self.bytes_out += len(message.get("body", b""))
            await send(message)

        return wrapped

    def record(self) -> None:
        seconds = time.perf_counter() - self.started
        method = self.scope["method"] if self.scope["method"] in METHODS else "OTHER"
        route = getattr(self.scope.get("route"), "path", UNMATCHED_ROUTE)
        HTTP_REQUESTS.labels(method, route, str(self.status)).inc()
        HTTP_REQUEST_SECONDS.labels(method, route).observe(seconds)
        fields = {
            "request_id": self.request_id,
            "method": method,
            "route": route,
            "status": self.status,
            "duration_ms": round(seconds * 1000, 1),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "client": (self.scope.get("client") or ("", 0))[0],
            **self._subject(),
        }
        level = logging.DEBUG if route in QUIET_ROUTES else logging.INFO
        access_log.log(level, "%s %s %s", method, route, self.status, extra=fields)

    def _subject(self) -> dict[str, str]:
        """Repository, digest and tag the request was about, when they are well-formed."""
        params = self.scope.get("path_params", {})
        name = params.get("name", "")
        reference = params.get("digest") or params.get("reference", "")
        query_digest = _query_value(self.scope, "digest")
        digest = next(
            (v for v in (reference, query_digest, self.response_digest) if DIGEST_RE.fullmatch(v)),
            "",
        )
        subject = {"repository": name if is_name(name) else "", "digest": digest}
        if reference and reference != digest and TAG_RE.fullmatch(reference):
            subject["tag"] = reference
        return {key: value for key, value in subject.items() if value}


def _request_id(scope: Scope) -> str:
    """The caller's `X-Request-Id` when it is a plain token (so it can be logged safely), else a new one."""
    offered = _header(scope.get("headers", []), b"x-request-id")
    return offered if SANE_REQUEST_ID.fullmatch(offered) else uuid.uuid4().hex


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


def _query_value(scope: Scope, name: str) -> str:
    query = scope.get("query_string", b"").decode("latin-1")
    return next((value for key, value in parse_qsl(query) if key == name), "")


# --- logging ----------------------------------------------------------------------------------------------

# `color_message` is uvicorn's copy of its message with terminal colour codes.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The `extra=` fields a log call attached, in the order they were given."""
    return {key: value for key, value in vars(record).items() if key not in _RECORD_ATTRIBUTES}


class RequestIdFilter(logging.Filter):
    """Stamp every record emitted while a request is handled (threads included) with that request's id."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            request_id = request_id_var.get()
            if request_id:
                record.request_id = request_id
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then every extra field."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **extra_fields(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """A readable line for terminals, the extra fields appended as `key=value`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        extras = " ".join(f"{key}={value}" for key, value in extra_fields(record).items())
        return f"{line} {extras}" if extras else line


class OneWarningPerCause(logging.Filter):
    """One warning per store fault, in the words of `/readyz`, whichever part of the service meets it first.

    One unreachable store used to log a warning from each part that met it (the page, the warm-up, the gc watch
    every few seconds, each failed push), in botocore's words. The first becomes the service's sentence
    (`app.storage.faults.UNUSABLE`); the fault told (`notices`), the others are demoted to DEBUG.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        fault = _storage_fault(record)
        if record.levelno < logging.WARNING or fault is None:
            return True
        cause = describe(fault)
        if notices.first(cause):
            record.msg, record.args = UNUSABLE, (cause,)
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def _storage_fault(record: logging.LogRecord) -> StorageFault | None:
    args = record.args.values() if isinstance(record.args, dict) else record.args or ()
    return next((arg for arg in args if isinstance(arg, StorageFault)), None)


def configure_logging(log_format: LogFormat, level: str = "info") -> None:
    """Send every logger (ours and uvicorn's) through one stderr handler in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    handler.addFilter(OneWarningPerCause())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    # Our access log replaces uvicorn's; botocore logs every request at DEBUG, credentials in headers included.
    logging.getLogger("uvicorn.access").disabled = True
    for noisy in ("botocore", "boto3", "s3transfer", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))


# --- storage ----------------------------------------------------------------------------------------------


def instrument_storage(storage: Storage) -> None:
    """Count the store's requests by operation, and the S3 client's retried attempts and failed requests.

    S3: botocore events (every attempt sent counts as a request). Filesystem: each backend call, by method.
    Unique ids (S3) and a marker (filesystem) make a second call for the same store (several apps over one
    registry in tests) a no-op.
    """
    if isinstance(storage, S3Storage):
        for client in (storage.client, storage.checker):
            events = client.meta.events
            events.register("before-send.s3", _count_request, unique_id="storj-registry-requests")
            events.register("request-created.s3", _count_retry, unique_id="storj-registry-retries")
            events.register("after-call.s3", _count_error_answer, unique_id="storj-registry-error-answers")
            events.register("after-call-error.s3", _count_failure, unique_id="storj-registry-failures")
    elif isinstance(storage, FilesystemStorage) and not getattr(storage, "_counted", False):
        for operation in FILESYSTEM_CALLS:
            setattr(storage, operation, _counted(operation, getattr(storage, operation)))
        storage._counted = True  # type: ignore[attr-defined]


FILESYSTEM_CALLS = ("stat", "read", "read_small", "put_bytes", "put_file", "copy", "delete", "list")
FILESYSTEM_CALLS += ("list_children", "list_children_sized", "list_children_etags")


def _counted(operation: str, call: Callable[..., Any]) -> Callable[..., Any]:
    counter = STORAGE_REQUESTS.labels(operation)

    def counting(*args: Any, **kwargs: Any) -> Any:
        counter.inc()
        return call(*args, **kwargs)

    return counting


def _count_request(event_name: str, **_: Any) -> None:
    STORAGE_REQUESTS.labels(_operation(event_name)).inc()


def _operation(event_name: str) -> str:
    return event_name.rsplit(".", 1)[-1]


def _count_retry(request: Any, event_name: str, **_: Any) -> None:
    if request.context.get("retries", {}).get("attempt", 1) > 1:
        STORAGE_RETRIES.labels(_operation(event_name)).inc()


def _count_error_answer(http_response: Any, event_name: str, **_: Any) -> None:
    if http_response.status_code >= 400 and http_response.status_code not in EXPECTED_S3_STATUSES:
        STORAGE_ERRORS.labels(_operation(event_name)).inc()


def _count_failure(event_name: str, **_: Any) -> None:
    STORAGE_ERRORS.labels(_operation(event_name)).inc()
