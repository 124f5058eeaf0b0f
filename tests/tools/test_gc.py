"""`storj-registry gc`: exactly the unreferenced objects go, everything a tag reaches stays and still pulls,
and objects modified within the grace period stay whatever references them."""

from __future__ import annotations

import os
import time

import httpx
import pytest

from app import layout
from app.settings import Settings
from app.storage import Storage
from app.tools.fsck import fsck
from app.tools.gc import gc
from tests.support.pushing import digest
from tests.tools.conftest import NAME, QUICK, Sample, run_tool


def garbage(sample: Sample) -> set[str]:
    """The untagged image (and its blobs), the referrer of it, the blob nothing names."""
    replaced = sample.replaced
    blobs = [replaced.config, *replaced.layers, sample.orphan_blob]
    manifests = [replaced.manifest, sample.orphan_signature]
    return {layout.manifest(NAME, digest(m)) for m in manifests} | {layout.blob(NAME, digest(b)) for b in blobs}


def keys(storage: Storage) -> set[str]:
    return set(storage.list("v2/"))


def test_gc_finds_then_deletes_exactly_the_unreferenced(storage: Storage, sample: Sample, client: httpx.Client) -> None:
    leftover = layout.staged_upload("0123456789abcdef" * 2)  # a commit interrupted between completion and copy
    storage.put_bytes(leftover, b"assembled bytes", layout.OCTET_STREAM)
    assert run_tool(fsck, storage)[1] == []  # a commit in progress is no problem
    expected, before = garbage(sample) | {leftover}, keys(storage)
    report, lines = run_tool(gc, storage, grace_seconds=0)
    assert set(lines) == {f"would-delete {key}" for key in expected}
    assert keys(storage) == before

    report, lines = run_tool(gc, storage, grace_seconds=0, delete=True, timing=QUICK)
    assert set(lines) == {f"deleted {key}" for key in expected}
    assert report.deleted == len(expected)
    orphan_entry = layout.referrer_entry(NAME, sample.replaced.digest, digest(sample.orphan_signature))
    records = {layout.blob_location(key.rsplit("/", 1)[1]) for key in expected if "/blobs/" in key}
    assert keys(storage) == before - expected - {orphan_entry} - records
    assert run_tool(fsck, storage)[1] == []
    for reference in ("v1", "v2", "multi", digest(sample.child), digest(sample.signature)):
        assert client.get(f"/v2/{NAME}/manifests/{reference}").status_code == 200
    for blob in (sample.tagged.config, *sample.tagged.layers, b"{}"):
        assert client.get(f"/v2/{NAME}/blobs/{digest(blob)}").content == blob


def test_objects_within_the_grace_period_stay(storage: Storage, sample: Sample) -> None:
    """All of it is new: the unreferenced manifests stay, and so does what they reference."""
    before = keys(storage)
    report, lines = run_tool(gc, storage, grace_seconds=3600, delete=True, timing=QUICK)
    unreferenced = [sample.replaced.manifest, sample.orphan_signature]
    expected = {layout.manifest(NAME, digest(m)) for m in unreferenced} | {
        layout.blob(NAME, digest(sample.orphan_blob))
    }
    assert {line.split(" ")[1] for line in lines} == expected
    assert all(line.startswith("kept-recent ") for line in lines)
    assert report.recent == report.garbage == len(expected)
    assert keys(storage) == before


@pytest.mark.parametrize("settings", ["filesystem"], indirect=True)
def test_a_recent_manifest_keeps_the_old_objects_it_reaches(
    settings: Settings, storage: Storage, sample: Sample
) -> None:
    """A push in progress put a manifest by digest onto blobs that had become garbage: they stay, as does its
    referrer; only what nothing reaches and is old goes."""
    an_hour_ago = time.time() - 3600
    aged = garbage(sample) - {layout.manifest(NAME, sample.replaced.digest)}
    for key in aged:
        os.utime(settings.data_dir / key, (an_hour_ago, an_hour_ago))
    _, lines = run_tool(gc, storage, grace_seconds=60, delete=True, timing=QUICK)
    assert [line for line in lines if not line.startswith("kept-recent ")] == [
        f"deleted {layout.blob(NAME, digest(sample.orphan_blob))}"
    ]
    assert aged - {layout.blob(NAME, digest(sample.orphan_blob))} <= keys(storage)
