"""`gc` aborts multipart uploads nobody will finish (a session lost with its staging volume), after the grace."""

from __future__ import annotations

import io
from pathlib import Path

from app.storage.s3 import S3Storage
from app.tools.gc import gc
from tests.conftest import s3_settings
from tests.support.seaweed import S3Server
from tests.tools.conftest import QUICK

PREFIX = "reg"


def open_uploads(s3_server: S3Server, bucket: str) -> list[str]:
    listing = s3_server.admin.list_multipart_uploads(Bucket=bucket)
    return [upload["Key"] for upload in listing.get("Uploads", [])]


def test_gc_aborts_abandoned_multipart_uploads_only_when_asked_and_past_the_grace(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    storage = S3Storage(s3_settings(s3_server, bucket, tmp_path, s3_prefix=PREFIX))
    key = "v2/_uploads/0123456789abcdef0123456789abcdef"
    storage.begin_multipart(key, "application/octet-stream")
    s3_server.admin.create_multipart_upload(Bucket=bucket, Key="outside/the/prefix")

    recent = io.StringIO()
    gc(storage, delete=True, grace_seconds=3600, timing=QUICK, out=recent)
    assert f"kept-recent multipart {key}" in recent.getvalue()

    dry = io.StringIO()
    gc(storage, delete=False, grace_seconds=0, out=dry)
    assert f"would-delete multipart {key}" in dry.getvalue()
    assert sorted(open_uploads(s3_server, bucket)) == sorted([f"{PREFIX}/{key}", "outside/the/prefix"])

    report = gc(storage, delete=True, grace_seconds=0, timing=QUICK, out=io.StringIO())
    assert report.deleted == 1
    assert open_uploads(s3_server, bucket) == ["outside/the/prefix"]
