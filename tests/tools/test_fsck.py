"""`storj-registry fsck`: a pushed bucket is clean; a broken one is reported, and `--repair` fixes the fixable."""

from __future__ import annotations

import json

import httpx
import pytest

from app import cli, layout
from app.registry.catalog_page import page_objects
from app.registry.documents import tags_document
from app.settings import Settings
from app.storage import Storage
from app.tools.fsck import fsck
from app.tools.gc import gc
from tests.support.pushing import OCI_MANIFEST, digest, push_image
from tests.support.registry_server import running_registry
from tests.tools.conftest import NAME, QUICK, Sample, run_tool


def codes(lines: list[str]) -> set[tuple[str, str]]:
    return {tuple(line.split(" ", 3)[1:3]) for line in lines if line.startswith("PROBLEM ")}  # type: ignore[misc]


def test_a_pushed_bucket_is_clean(storage: Storage, sample: Sample) -> None:
    report, lines = run_tool(fsck, storage, blobs=True)
    assert lines == []
    assert (report.manifests, report.tags) == (6, 3)  # by digest, as gc counts them
    assert report.blobs_read == len(list(storage.list(layout.blobs_dir(NAME))))
    assert report.left == 0


def test_fsck_and_gc_count_manifests_alike(storage: Storage, sample: Sample) -> None:
    checked, _ = run_tool(fsck, storage)
    collected, _ = run_tool(gc, storage, timing=QUICK)
    assert (checked.repositories, checked.manifests) == (collected.repositories, collected.manifests)


def corrupt(storage: Storage, key: str, data: bytes) -> None:
    """Bytes changed behind the registry's back (a disk, a bucket tool), metadata kept."""
    info = storage.stat(key)
    assert info is not None
    storage.put_bytes(key, data, info.content_type, info.cache_control)


def test_blobs_that_do_not_hash_to_their_digest_are_found_and_quarantined(
    storage: Storage, sample: Sample, settings: Settings
) -> None:
    flipped, cut = (layout.blob(NAME, digest(layer)) for layer in sample.tagged.layers)
    layer, short = sample.tagged.layers
    corrupt(storage, flipped, bytes([layer[0] ^ 1]) + layer[1:])
    corrupt(storage, cut, short[: len(short) // 2])
    assert run_tool(fsck, storage)[1] == []  # without --blobs, nothing reads them

    _, lines = run_tool(fsck, storage, blobs=True)
    assert codes(lines) == {("blob-digest-mismatch", flipped), ("short-blob", cut)}
    mismatch = next(line for line in lines if flipped in line)
    assert f"its {len(layer)} bytes hash to {digest(bytes([layer[0] ^ 1]) + layer[1:])}" in mismatch
    assert f"pulls of {NAME}:v1, {NAME}:v2, {NAME}@{sample.tagged.digest[:19]}" in mismatch  # v2 was moved to v1
    assert f"{len(short) // 2} of the {len(short)} bytes its manifests give" in next(x for x in lines if cut in x)

    _, lines = run_tool(fsck, storage, blobs=True, repair=True)
    assert {line for line in lines if line.startswith("REPAIRED")} == {
        f"REPAIRED blob-digest-mismatch {flipped}",
        f"REPAIRED short-blob {cut}",
    }
    assert storage.stat(flipped) is None and storage.stat(layout.quarantined(flipped)) is not None
    _, lines = run_tool(fsck, storage, blobs=True)
    assert codes(lines) == {("missing-blob", flipped), ("missing-blob", cut)}  # until pushed again

    # The next push of the image writes its blobs anew. (A service that wrote them itself believes them present
    # for up to 30 s more, app/registry/beliefs.py: this is one started since, as after that time or a restart.)
    with running_registry(settings) as url, httpx.Client(base_url=url) as client:
        push_image(client, NAME, "v1", seed=1)
    _, lines = run_tool(fsck, storage, blobs=True)
    assert lines == []


def break_the_bucket(storage: Storage, sample: Sample) -> dict[tuple[str, str], bool]:
    """Damage of every kind; maps each expected (code, key) to whether --repair can fix it."""
    tag_key = layout.manifest(NAME, "v1")
    storage.put_bytes(tag_key, sample.tagged.manifest, "application/json", layout.MUTABLE_CACHE)
    missing_layer = layout.blob(NAME, digest(sample.tagged.layers[1]))
    record = layout.blob_location(digest(sample.tagged.layers[1]))
    storage.put_bytes(record, NAME.encode(), layout.TEXT, layout.MUTABLE_CACHE)  # as for a blob of share size
    storage.delete(missing_layer)
    liar = layout.manifest(NAME, digest(b"not this manifest"))
    storage.put_bytes(liar, sample.child, OCI_MANIFEST, layout.MANIFEST_CACHE_IMMUTABLE)
    storage.put_bytes(layout.tags_list(NAME), tags_document(NAME, ["v1"]), layout.JSON, layout.MUTABLE_CACHE)
    storage.delete(layout.manifest(NAME, digest(sample.index)))
    storage.delete(layout.catalog_entry(NAME))
    storage.put_bytes(layout.CATALOG, b'{"repositories": []}', layout.JSON, layout.MUTABLE_CACHE)
    signature_entry = layout.referrer_entry(NAME, sample.tagged.digest, digest(sample.signature))
    storage.delete(signature_entry)
    storage.delete(layout.INDEX_HTML)
    return {
        ("wrong-content-type", tag_key): True,
        ("missing-blob", missing_layer): False,
        ("digest-mismatch", liar): False,
        ("stale-document", layout.tags_list(NAME)): True,
        ("tag-without-digest", layout.manifest(NAME, "multi")): True,
        ("missing-catalog-entry", layout.catalog_entry(NAME)): True,
        ("stale-document", layout.CATALOG): True,
        ("missing-referrer-entry", signature_entry): True,
        ("missing-index-html", layout.INDEX_HTML): True,
        ("stale-blob-record", record): True,
    }


def test_a_broken_bucket_is_reported_and_repaired(storage: Storage, sample: Sample) -> None:
    expected = break_the_bucket(storage, sample)
    report, lines = run_tool(fsck, storage)
    assert codes(lines) == set(expected)
    assert report.left == len(lines)  # a blob missing from two manifests is two lines

    report, lines = run_tool(fsck, storage, repair=True)
    repaired = {tuple(line.split(" ")[1:3]) for line in lines if line.startswith("REPAIRED ")}
    assert repaired == {problem for problem, fixable in expected.items() if fixable}

    report, lines = run_tool(fsck, storage)
    assert codes(lines) == {problem for problem, fixable in expected.items() if not fixable}
    tag = storage.read_small(layout.manifest(NAME, "v1"))
    assert tag is not None and tag[1].content_type == OCI_MANIFEST
    tags = storage.read_small(layout.tags_list(NAME))
    assert tags is not None and json.loads(tags[0])["tags"] == ["multi", "v1", "v2"]
    referrers = storage.read_small(layout.referrers(NAME, sample.tagged.digest))
    assert referrers is not None
    assert [m["digest"] for m in json.loads(referrers[0])["manifests"]] == [digest(sample.signature)]


def test_the_command_exits_1_while_problems_remain(
    settings: Settings, storage: Storage, sample: Sample, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    for field, value in settings.model_dump(include={"storage", "data_dir", "staging_dir"}).items():
        monkeypatch.setenv(f"REGISTRY_{field.upper()}", str(value))
    if settings.storage == "s3":
        for field in ("s3_endpoint", "s3_bucket", "s3_access_key", "s3_secret_key", "s3_region"):
            monkeypatch.setenv(f"REGISTRY_{field.upper()}", getattr(settings, field))
    storage.delete(layout.tags_list(NAME))
    assert cli.main(["fsck"]) == 1
    assert cli.main(["fsck", "--repair"]) == 0
    assert cli.main(["fsck"]) == 0
    captured = capsys.readouterr()
    assert f"PROBLEM missing-document {layout.tags_list(NAME)}" in captured.out
    assert "0 problems, 0 repaired, 0 left" in captured.err


def test_repair_restores_the_catalog_page_and_drops_an_older_versions_files(storage: Storage, sample: Sample) -> None:
    *assets, page = page_objects()
    older = layout.page_asset("app.0123456789abcdef.js")
    storage.put_bytes(older, b"// an older page's script", "text/javascript", layout.MANIFEST_CACHE_IMMUTABLE)
    storage.put_bytes(page.key, b"<!doctype html><p>an older page", page.content_type, page.cache_control)
    storage.delete(assets[0].key)
    expected = {("missing-page", assets[0].key), ("stale-page", page.key), ("stale-page-asset", older)}

    _, lines = run_tool(fsck, storage)
    assert codes(lines) == expected
    _, lines = run_tool(fsck, storage, repair=True)
    assert {tuple(line.split(" ")[1:3]) for line in lines if line.startswith("REPAIRED ")} == expected
    _, lines = run_tool(fsck, storage)
    assert lines == []
    for item in page_objects():
        found = storage.read_small(item.key)
        assert found is not None and item.matches(*found)
    assert storage.stat(older) is None
