"""Where the store does not honour If-Match, `tags/list` is written as a chain of versions
(app/registry/documents.py). A writer that keeps no chain (a replica of an earlier version, during a rolling
upgrade) may write the document after the chain's newest version: a process that then reads the document and
finds in it a tag that no version names keeps that tag if its key is there, and leaves it out if its key is gone
(a deleted tag is not brought back)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from app import layout
from app.registry import build_registry, documents
from app.storage import Storage, open_storage
from tests.conftest import proxied_settings
from tests.support.fault_proxy import FaultProxy, no_conditional_overwrite
from tests.support.pushing import OCI_MANIFEST, image_manifest, push_image
from tests.support.registry_server import running_registry
from tests.support.seaweed import S3Server

NAME = "team/rolling"


def tags_listed(storage: Storage, name: str) -> list[str]:
    found = storage.read_small(layout.tags_list(name))
    assert found is not None
    return json.loads(found[0])["tags"]


def test_a_tag_an_unchained_writer_added_is_kept_and_a_deleted_one_is_not_brought_back(
    s3_server: S3Server, tmp_path: Path
) -> None:
    with FaultProxy(s3_server.endpoint) as proxy:
        proxy.add(no_conditional_overwrite())
        settings = proxied_settings(s3_server, s3_server.new_bucket("rolling"), tmp_path, proxy)
        storage = open_storage(settings)
        with running_registry(settings, build_registry(settings)) as url, httpx.Client(base_url=url) as client:
            push_image(client, NAME, "chained", seed=1)
        assert documents.latest_version(storage, documents.tags_kind(storage, NAME)) is not None

        # An older replica pushes `unchained` (its manifest, then the document, no version); `gone` was deleted.
        body = image_manifest(b'{"architecture":"amd64","os":"linux"}', [])
        storage.put_bytes(layout.manifest(NAME, "unchained"), body, OCI_MANIFEST, layout.MUTABLE_CACHE)
        older = documents.tags_document(NAME, ["chained", "gone", "unchained"])
        storage.put_bytes(layout.tags_list(NAME), older, layout.JSON, layout.MUTABLE_CACHE)

        fresh = build_registry(settings.model_copy(update={"staging_dir": tmp_path / "fresh"}))
        with running_registry(settings, fresh) as url, httpx.Client(base_url=url) as client:
            push_image(client, NAME, "later", seed=2)
        assert tags_listed(storage, NAME) == ["chained", "later", "unchained"]
