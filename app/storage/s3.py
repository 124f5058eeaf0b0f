"""The S3 backend, made for Storj's gateway.

What the gateway needs (docs/storj.md): checksums only "when required" (it rejects boto3's aws-chunked
trailers), path-style addressing, region `global`, `ContentType` given when a multipart upload is created,
64 MiB parts, no UploadPartCopy (so copies are single CopyObject requests, metadata-only on Storj), and
retries with backoff on `SlowDown`. A failed multipart upload is aborted by the transfer manager.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import S3Transfer, TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from s3transfer.utils import ReadFileChunk

from app import layout
from app.settings import Settings
from app.storage.base import READ_CHUNK, ObjectExists, ObjectInfo, PreconditionFailed, StorageFault
from app.storage.faults import MissingBucket

_MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchUpload"}
_PRECONDITION_FAILED = {"412", "PreconditionFailed"}
DIGEST_METADATA = "digest"  # x-amz-meta-digest: the digest a tag's manifest was pushed as
PROBE_ETAG = '"storj-registry-probe"'  # no object's etag: a store that honours If-Match refuses the probe
# The store check (start-up, /readyz) asks once and briefly: retrying an unreachable endpoint for a minute would
# only delay the operator's warning and outlast the probe's own timeout.
CHECK_CONNECT_SECONDS = 3
CHECK_READ_SECONDS = 5


def client_config(settings: Settings) -> Config:
    """The botocore configuration the Storj gateway needs; tested on its own since plain-http tests can't see it."""
    return Config(
        region_name=settings.s3_region,
        signature_version="s3v4",
        # Over TLS the body needs no SHA-256 in the signature (UNSIGNED-PAYLOAD): TLS already protects it, and
        # botocore would otherwise hash every part once more, since no checksum header is sent. Plain http keeps it.
        s3={"addressing_style": "path", "payload_signing_enabled": not settings.s3_endpoint.startswith("https://")},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"mode": "standard", "max_attempts": settings.s3_max_attempts},
        max_pool_connections=max(16, settings.s3_max_concurrency * 4),
        connect_timeout=10,
        read_timeout=120,
    )


def check_config(settings: Settings) -> Config:
    """`client_config` for the store check: one attempt, short timeouts."""
    return client_config(settings).merge(
        Config(
            retries={"mode": "standard", "total_max_attempts": 1},
            connect_timeout=CHECK_CONNECT_SECONDS,
            read_timeout=CHECK_READ_SECONDS,
        )
    )


def _drop_expect_continue(request: Any, **_: Any) -> None:
    """Send bodies at once instead of waiting for `100 Continue`.

    Some S3 servers (SeaweedFS among them) answer a PUT before reading its body when asked to expect
    `100 Continue`, which leaves the pooled connection out of step and the next request hanging.
    """
    if "Expect" in request.headers:
        del request.headers["Expect"]


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code"))


def _is_missing(error: ClientError) -> bool:
    return _error_code(error) in _MISSING


def _create_only(if_absent: bool) -> dict[str, str]:
    """`If-None-Match: *`: Storj honours it on PutObject, CopyObject and CompleteMultipartUpload (412 if present)."""
    return {"IfNoneMatch": "*"} if if_absent else {}


def _client(settings: Settings, config: Config, session: boto3.session.Session) -> Any:
    client = session.client(
        "s3",
        endpoint_url=settings.s3_endpoint,
        aws_access_key_id=settings.s3_access_key,
        aws_secret_access_key=settings.s3_secret_key,
        config=config,
        verify=None if settings.s3_endpoint.startswith("https://") else False,
    )
    client.meta.events.register_first("before-sign.s3", _drop_expect_continue)
    return client


class S3Storage:
    def __init__(self, settings: Settings) -> None:
        # Whether the server refuses a stale If-Match write: learnt once, on first need (`conditional_overwrite`).
        self._conditional: bool | None = None
        self._probing = threading.Lock()
        self.bucket = settings.s3_bucket
        self.prefix = f"{settings.s3_prefix}/" if settings.s3_prefix else ""
        # One session for both clients: it loads the S3 service model once (a session each cost 14 MiB more).
        session = boto3.session.Session()
        self.client = _client(settings, client_config(settings), session)
        self.checker = _client(settings, check_config(settings), session)
        self.part_size = settings.s3_part_size
        self.max_concurrency = settings.s3_max_concurrency
        # One transfer manager (and its thread pool) for the service's life, not one per upload.
        self.transfer = S3Transfer(
            self.client,
            TransferConfig(
                multipart_threshold=settings.s3_part_size,
                multipart_chunksize=settings.s3_part_size,
                max_concurrency=settings.s3_max_concurrency,
                use_threads=True,
            ),
        )

    def _key(self, key: str) -> str:
        return self.prefix + key

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            head = self._call(self.client.head_object, Bucket=self.bucket, Key=self._key(key))
        except KeyError:
            return None
        return self._info(head)

    @staticmethod
    def _info(response: dict[str, Any]) -> ObjectInfo:
        modified = response.get("LastModified")
        return ObjectInfo(
            size=response["ContentLength"],
            content_type=response.get("ContentType", "application/octet-stream"),
            cache_control=response.get("CacheControl"),
            last_modified=modified.timestamp() if modified else None,
            etag=response.get("ETag"),
            digest=(response.get("Metadata") or {}).get(DIGEST_METADATA),
        )

    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        extra: dict[str, Any] = {}
        if start or end is not None:
            extra["Range"] = f"bytes={start}-{'' if end is None else end}"
        response = self._call(self.client.get_object, Bucket=self.bucket, Key=self._key(key), **extra)
        return self._stream(response["Body"])

    @staticmethod
    def _stream(body: Any) -> Iterator[bytes]:
        try:
            yield from body.iter_chunks(READ_CHUNK)
        finally:
            body.close()

    def read_small(self, key: str) -> tuple[bytes, ObjectInfo] | None:
        try:
            response = self._call(self.client.get_object, Bucket=self.bucket, Key=self._key(key))
            data = response["Body"].read()
        except KeyError:
            return None
        except BotoCoreError as exc:
            raise StorageFault(f"reading {key}: {exc}") from exc
        return data, self._info(response)

    def put_bytes(
        self,
        key: str,
        data: bytes,
        content_type: str,
        cache_control: str | None = None,
        *,
        if_absent: bool = False,
        if_match: str | None = None,
        digest: str | None = None,
    ) -> str | None:
        extra = self._metadata(content_type, cache_control) | _create_only(if_absent)
        if digest:
            extra["Metadata"] = {DIGEST_METADATA: digest}
        if if_match is not None:
            extra["IfMatch"] = if_match
        try:
            response = self._call(self.client.put_object, Bucket=self.bucket, Key=self._key(key), Body=data, **extra)
        except KeyError:  # If-Match on an absent key: AWS answers 404 (SeaweedFS 412)
            raise PreconditionFailed(key) from None
        return response.get("ETag")

    def put_file(
        self,
        key: str,
        path: Path,
        content_type: str,
        cache_control: str | None = None,
        *,
        if_absent: bool = False,
        length: int | None = None,
    ) -> None:
        """The first `length` bytes of `path` (all when None): one PutObject below the part size, create-only when
        asked; the transfer manager's multipart upload above (whole files only: a prefix goes in parts)."""
        extra = self._metadata(content_type, cache_control)
        size = path.stat().st_size if length is None else length
        if size < self.part_size:
            with ReadFileChunk.from_filename(str(path), 0, size, enable_callbacks=False) as body:
                self._call(
                    self.client.put_object,
                    Bucket=self.bucket,
                    Key=self._key(key),
                    Body=body,
                    ContentLength=size,
                    **extra | _create_only(if_absent),
                )
            return
        if length is not None:
            self._put_prefix_in_parts(key, path, size, content_type, cache_control, if_absent=if_absent)
            return
        try:
            self.transfer.upload_file(str(path), self.bucket, self._key(key), extra_args=extra)
        except (ClientError, BotoCoreError, S3UploadFailedError) as exc:
            raise StorageFault(f"upload of {key} failed: {exc}") from exc

    def _put_prefix_in_parts(
        self, key: str, path: Path, size: int, content_type: str, cache_control: str | None, *, if_absent: bool
    ) -> None:
        """A multipart upload of exactly `size` bytes of `path`, parts in parallel; aborted if it fails."""
        upload_id = self.begin_multipart(key, content_type, cache_control)
        offsets = range(0, size, self.part_size)
        try:
            with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
                etags = list(
                    pool.map(
                        lambda numbered: self.put_part(
                            key, upload_id, numbered[0], path, numbered[1], min(self.part_size, size - numbered[1])
                        ),
                        enumerate(offsets, start=1),
                    )
                )
            self.complete_multipart(key, upload_id, etags, if_absent=if_absent)
        except BaseException:
            with contextlib.suppress(Exception):
                self.abort_multipart(key, upload_id)
            raise

    @property
    def conditional_overwrite(self) -> bool:
        """Does the server refuse a stale If-Match write? Probed on first need (the registry does at start), once:
        every writer of a derived document must agree on how it is written (app/registry/documents.py). A store
        that cannot be reached raises StorageFault rather than leave a guess."""
        if self._conditional is None:
            with self._probing:
                if self._conditional is None:
                    self.probe_conditional_overwrite()
        return bool(self._conditional)

    def probe_conditional_overwrite(self) -> bool:
        """Does the server refuse a PutObject whose If-Match names no version of the key?

        SeaweedFS and AWS refuse it (412 or 404) and write nothing; a server that ignores the header writes the
        probe object (deleted again); one that does not implement it answers an error. Only a refusal counts.
        """
        key = layout.capability_probe(secrets.token_hex(8))
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=b"", IfMatch=PROBE_ETAG)
        except ClientError as exc:  # the server's answer: a refusal, or not implemented
            refused = _is_missing(exc) or _error_code(exc) in _PRECONDITION_FAILED
            self._conditional = refused
            return refused
        except BotoCoreError as exc:  # no answer: nothing learnt
            raise StorageFault(f"put_object: {exc}") from exc
        self._conditional = False
        self.delete(key)
        return False

    def begin_multipart(self, key: str, content_type: str, cache_control: str | None = None) -> str:
        """`ContentType` goes here, not on completion: it is what the gateway stores for multipart objects."""
        extra = self._metadata(content_type, cache_control)
        response = self._call(self.client.create_multipart_upload, Bucket=self.bucket, Key=self._key(key), **extra)
        return response["UploadId"]

    def put_part(self, key: str, upload_id: str, number: int, path: Path, offset: int, length: int) -> str:
        """Stream one part from the staged file (seekable, so botocore can sign and retry it without a copy)."""
        with ReadFileChunk.from_filename(str(path), offset, length, enable_callbacks=False) as body:
            response = self._call(
                self.client.upload_part,
                Bucket=self.bucket,
                Key=self._key(key),
                UploadId=upload_id,
                PartNumber=number,
                Body=body,
                ContentLength=length,
            )
        return response["ETag"]

    def complete_multipart(self, key: str, upload_id: str, etags: list[str], *, if_absent: bool = False) -> None:
        parts = [{"PartNumber": number, "ETag": etag} for number, etag in enumerate(etags, start=1)]
        self._call(
            self.client.complete_multipart_upload,
            Bucket=self.bucket,
            Key=self._key(key),
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},
            **_create_only(if_absent),
        )

    def abort_multipart(self, key: str, upload_id: str) -> None:
        with contextlib.suppress(KeyError):
            self._call(self.client.abort_multipart_upload, Bucket=self.bucket, Key=self._key(key), UploadId=upload_id)

    def unfinished_multipart(self) -> Iterator[tuple[str, str, float]]:
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=self.prefix)
            for page in pages:
                for upload in page.get("Uploads", []):
                    key = upload["Key"][len(self.prefix) :]
                    yield key, upload["UploadId"], upload["Initiated"].timestamp()
        except (ClientError, BotoCoreError) as exc:
            raise StorageFault(f"listing multipart uploads failed: {exc}") from exc

    def copy(self, source: str, destination: str, *, if_absent: bool = False) -> None:
        """One CopyObject request: never the managed copy, which switches to UploadPartCopy (501 on Storj)."""
        self._call(
            self.client.copy_object,
            Bucket=self.bucket,
            Key=self._key(destination),
            CopySource={"Bucket": self.bucket, "Key": self._key(source)},
            MetadataDirective="COPY",
            **_create_only(if_absent),
        )

    def delete(self, key: str) -> None:
        with contextlib.suppress(KeyError):
            self._call(self.client.delete_object, Bucket=self.bucket, Key=self._key(key))

    def list(self, prefix: str) -> Iterator[str]:
        for page in self._pages(self._key(prefix), delimiter=None):
            for item in page.get("Contents", []):
                if not item["Key"].endswith("/"):  # a directory marker, not an object
                    yield item["Key"][len(self.prefix) :]

    def list_children(self, prefix: str) -> Iterator[str]:
        for name, _ in self.list_children_sized(prefix):
            yield name

    def list_children_sized(self, prefix: str) -> Iterator[tuple[str, int]]:
        """Directory markers are not children: some servers (SeaweedFS) list an emptied folder as its own key."""
        full = self._key(prefix)
        for page in self._pages(full, delimiter="/"):
            for item in page.get("Contents", []):
                name = item["Key"][len(full) :]
                if name and not name.endswith("/"):
                    yield name, item["Size"]

    def list_children_etags(self, prefix: str) -> Iterator[tuple[str, str | None]]:
        full = self._key(prefix)
        for page in self._pages(full, delimiter="/"):
            for item in page.get("Contents", []):
                name = item["Key"][len(full) :]
                if name and not name.endswith("/"):
                    yield name, item.get("ETag")

    def check(self) -> None:
        try:
            self._call(self.checker.head_bucket, Bucket=self.bucket)
        except KeyError:
            raise MissingBucket(self.bucket) from None

    def _pages(self, prefix: str, delimiter: str | None) -> Iterator[dict[str, Any]]:
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if delimiter:
            args["Delimiter"] = delimiter
        try:
            yield from self.client.get_paginator("list_objects_v2").paginate(**args)
        except (ClientError, BotoCoreError) as exc:
            raise StorageFault(f"listing {prefix} failed: {exc}") from exc

    @staticmethod
    def _metadata(content_type: str, cache_control: str | None) -> dict[str, Any]:
        extra: dict[str, Any] = {"ContentType": content_type}
        if cache_control:
            extra["CacheControl"] = cache_control
        return extra

    @staticmethod
    def _call(operation: Any, **kwargs: Any) -> Any:
        """Run one S3 request: absent keys become KeyError, every other failure a StorageFault."""
        try:
            return operation(**kwargs)
        except ClientError as exc:
            if _is_missing(exc):
                raise KeyError(kwargs.get("Key")) from exc
            if kwargs.get("IfNoneMatch") and _error_code(exc) in _PRECONDITION_FAILED:
                raise ObjectExists(kwargs.get("Key")) from exc
            if kwargs.get("IfMatch") and _error_code(exc) in _PRECONDITION_FAILED:
                raise PreconditionFailed(kwargs.get("Key")) from exc
            raise StorageFault(f"{operation.__name__}: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageFault(f"{operation.__name__}: {exc}") from exc
