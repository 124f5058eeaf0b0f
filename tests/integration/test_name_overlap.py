"""Repository names whose keys would lie inside another repository's (or `v2/index.html`) are refused.

`victim/tags/list` would keep its blobs under `v2/victim/tags/list/`, the path of `victim`'s tags list; a folder and
an object cannot share a path on the filesystem store, and a static server cannot tell them apart on S3. Such names
get `403 DENIED` (which docker does not retry) saying why, in either order of pushes and on both backends, and
nothing is written.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from app import layout
from app.settings import Settings
from app.storage import StorageFault
from app.storage.filesystem import TMP_DIR, FilesystemStorage
from app.tools.fsck import fsck
from tests.conftest import BucketView
from tests.support.pushing import push_blob, push_image
from tests.tools.conftest import run_tool

OVERLAPPING = [
    "victim/tags/list",
    "victim/tags/list.json",
    "victim/manifests/v1",
    "victim/manifests/v1.json",
    "victim/manifests",
    "victim/blobs/x",
    "victim/referrers",
    "demo/app/tags/list",
    "index.html",
    "index.html.json",
    "index.html/x",
]


def staged_sessions(settings: Settings) -> list[Path]:
    """Sessions holding bytes (what a push leaves on the staging disk besides: receipts, markers)."""
    return list(settings.staging_dir.glob("*/data"))


@pytest.mark.parametrize("name", OVERLAPPING)
def test_a_name_inside_another_repositorys_keys_is_refused_and_writes_nothing(
    name: str, client: httpx.Client, bucket_view: BucketView, settings: Settings
) -> None:
    push_image(client, "victim", "v1")
    before = bucket_view.objects()
    started = client.post(f"/v2/{name}/blobs/uploads/")
    assert started.status_code == 403, started.text
    error = started.json()["errors"][0]
    assert error["code"] == "DENIED"
    assert "reserved" in error["message"] and "would put this repository's objects" in error["message"]
    assert client.put(f"/v2/{name}/manifests/v1", content=b"{}").json()["errors"][0]["code"] == "DENIED"
    assert bucket_view.objects() == before
    assert staged_sessions(settings) == []


def test_the_victim_pushed_after_the_refusal_is_intact(client: httpx.Client, bucket_view: BucketView) -> None:
    """The order of the report: a blob to `victim/tags/list` first, then `victim` itself, twice."""
    assert client.post("/v2/victim/tags/list/blobs/uploads/").status_code == 403
    push_image(client, "victim", "v1", seed=1)
    push_image(client, "victim", "v2", seed=2)
    assert client.get("/v2/victim/tags/list").json() == {"name": "victim", "tags": ["v1", "v2"]}
    assert client.get("/v2/_catalog").json() == {"repositories": ["victim"]}


def test_names_with_the_layout_words_as_their_first_component_still_work(client: httpx.Client) -> None:
    """Only a word after a parent overlaps a parent's keys: `tags/app` has no parent repository to collide with."""
    for name in ("tags/app", "manifests", "blobs/x/y"):
        push_blob(client, name, b"data")
    assert client.head(f"/v2/tags/app/blobs/{push_blob(client, 'tags/app', b'data')}").status_code == 200


def overlapping_tree(root: Path) -> FilesystemStorage:
    """A data dir as a registry before the name rule could leave it: `victim/tags/list` and `index.html` blobs."""
    storage = FilesystemStorage(root)
    digest = "sha256:" + "a" * 64
    for key in (layout.blob("victim/tags/list", digest), layout.blob("index.html", digest)):
        storage.put_bytes(key, b"x", layout.OCTET_STREAM)
    storage.put_bytes(layout.manifest("victim", digest), b"{}", layout.JSON)
    return storage


def test_the_filesystem_store_refuses_a_key_where_a_folder_or_a_file_is_in_the_way(tmp_path: Path) -> None:
    storage = overlapping_tree(tmp_path)
    source = tmp_path / "staged"
    source.write_bytes(b"staged bytes")
    below_a_file = layout.manifest("victim", "sha256:" + "a" * 64) + "/below"
    blocked = [layout.tags_list("victim"), layout.INDEX_HTML, below_a_file]
    for key in blocked:
        with pytest.raises(StorageFault, match="overlaps"):
            storage.put_bytes(key, b"{}", layout.JSON)
        with pytest.raises(StorageFault, match="overlaps"):
            storage.put_file(key, source, layout.OCTET_STREAM)
    with pytest.raises(StorageFault, match="overlaps"):
        storage.copy(layout.manifest("victim", "sha256:" + "a" * 64), layout.INDEX_HTML)
    assert list((tmp_path / TMP_DIR).iterdir()) == []


def test_fsck_repair_reports_such_a_tree_without_crashing(tmp_path: Path) -> None:
    storage = overlapping_tree(tmp_path)
    report, lines = run_tool(fsck, storage, repair=True)
    assert any(line.startswith("PROBLEM unexpected-key v2/victim/tags/list/blobs/") for line in lines)
    assert any(line.startswith("UNREPAIRED missing-document v2/victim/tags/list ") for line in lines), lines
    assert report.left > 0
    assert list((tmp_path / TMP_DIR).iterdir()) == []
