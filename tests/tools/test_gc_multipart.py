"""`gc` aborts multipart uploads nobody will finish (a session lost with its staging volume), after the grace."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

import pytest

from app import layout
from app.registry import build_registry
from app.registry.gc_runs import GcRuns
from app.storage.s3 import S3Storage
from app.tools import gc as gc_module
from app.tools.gc import gc
from app.tools.gc_run import RunTiming
from tests.conftest import s3_settings
from tests.support.registry_server import running_registry
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


def test_gc_aborts_at_once_the_multipart_uploads_of_a_writer_that_died(
    s3_server: S3Server, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica killed mid-push leaves an open multipart upload, its record, and a presence that still looks
    fresh; the next run aborts the upload, well within the grace, because the writer its record names never
    acknowledges the run. So does an upload with no record that began before every live participant started. A
    live participant's upload stays."""
    monkeypatch.setattr(gc_module, "CLOCK_SKEW_SECONDS", 0.0)  # the store and the participants share a clock here
    settings = s3_settings(s3_server, bucket, tmp_path, s3_prefix=PREFIX, gc_watch_seconds=0.2)
    storage = S3Storage(settings)
    dead = GcRuns(storage, 300)
    asyncio.run(dead.be_present())  # fresh, and never acknowledges anything
    unrecorded = "v2/_uploads/" + "a" * 32
    storage.begin_multipart(unrecorded, "application/octet-stream")
    time.sleep(2)  # the store's clock counts seconds
    registry = build_registry(settings)
    with running_registry(settings, registry):  # a live participant, started after the unrecorded upload began
        time.sleep(1.5)
        uploads = {}
        for writer, name in ((dead.id, "b"), (registry.gc_runs.id, "c")):
            uploads[name] = "v2/_uploads/" + name * 32
            storage.put_bytes(layout.multipart_record(writer, uploads[name]), b"", layout.TEXT)
            storage.begin_multipart(uploads[name], "application/octet-stream")
        out = io.StringIO()
        gc(storage, delete=True, grace_seconds=3600, timing=RunTiming(settle_seconds=5, mark_seconds=0), out=out)
    assert open_uploads(s3_server, bucket) == [f"{PREFIX}/v2/_uploads/{'c' * 32}"], out.getvalue()
    records = list(storage.list(layout.MULTIPART_RECORDS))
    assert records == [layout.multipart_record(registry.gc_runs.id, uploads["c"])]
