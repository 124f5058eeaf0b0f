"""`gc` aborts multipart uploads nobody will finish (a session lost with its staging volume), after the grace."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

import pytest

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
    """A replica killed mid-push leaves an open multipart upload and a presence that still looks fresh; the next
    run aborts the upload, well within the grace, because it began before every participant alive started
    (the dead one never acknowledges the run). An upload begun after a live participant started stays."""
    monkeypatch.setattr(gc_module, "CLOCK_SKEW_SECONDS", 0.0)  # the store and the participants share a clock here
    settings = s3_settings(s3_server, bucket, tmp_path, s3_prefix=PREFIX, gc_watch_seconds=0.2)
    storage = S3Storage(settings)
    dead = GcRuns(storage, 300)
    asyncio.run(dead.be_present())  # fresh, and never acknowledges anything
    orphan = "v2/_uploads/" + "a" * 32
    storage.begin_multipart(orphan, "application/octet-stream")
    time.sleep(2)  # the store's clock counts seconds
    with running_registry(settings):  # a live participant, started after the orphan began
        time.sleep(1.5)
        live = "v2/_uploads/" + "b" * 32
        storage.begin_multipart(live, "application/octet-stream")
        out = io.StringIO()
        gc(storage, delete=True, grace_seconds=3600, timing=RunTiming(settle_seconds=5, mark_seconds=0), out=out)
    assert open_uploads(s3_server, bucket) == [f"{PREFIX}/{live}"], out.getvalue()
