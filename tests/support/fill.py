"""A bucket filled as pushes leave it, straight into the store (filling through the service would take minutes),
with what a later push reads of it: a repository of many tags (each its own manifest and config blob, two shared
layers), or a catalog of many repositories, with their tags list and catalog and, where the store does not
honour If-Match, their chains of versions (app/registry/documents.py). Used by
tests/integration/test_cost_at_scale.py and bench/wan.py."""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor

from app import layout
from app.registry import blob_summaries, documents
from app.storage import Storage
from tests.support.pushing import OCI_MANIFEST, image_manifest

NAME = "team/app"
LAYERS = [b"a shared layer " * 300, b"another shared layer " * 300]
WRITERS = 48  # the store's client keeps this many connections (tests/integration/test_cost_at_scale.py)


def config(seed: int) -> bytes:
    return json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def fill_repository(direct: Storage, chained: Storage, tags: int) -> None:
    """`tags` tags of NAME, each with its own manifest and config blob, then the tags list and its chain, and the
    summary of its blobs. The manifests' digest keys are left out: no push reads them, and they would double the
    fill's time."""

    def tagged(number: int) -> None:
        blob = config(number)
        direct.put_bytes(layout.blob(NAME, sha256(blob)), blob, layout.OCTET_STREAM)
        direct.put_bytes(layout.manifest(NAME, f"v{number}"), image_manifest(blob, LAYERS), OCI_MANIFEST)

    for blob in LAYERS:
        direct.put_bytes(layout.blob(NAME, sha256(blob)), blob, layout.OCTET_STREAM)
    with ThreadPoolExecutor(WRITERS) as pool:
        list(pool.map(tagged, range(tags)))
    direct.put_bytes(layout.catalog_entry(NAME), b"", layout.OCTET_STREAM)
    blobs = [*LAYERS, *(config(number) for number in range(tags))]
    blob_summaries.write(direct, NAME, blob_summaries.Summary.of(map(sha256, blobs)))
    documents.rebuild(chained, documents.tags_kind(chained, NAME))
    documents.rebuild(chained, documents.catalog_kind(chained))


def fill_catalog(direct: Storage, chained: Storage, repositories: int) -> None:
    """`repositories` catalog entries, then the catalog and its chain (what a push to a new repository reads;
    the repositories' own keys are never read by it, so they are left out)."""

    def repository(number: int) -> None:
        direct.put_bytes(layout.catalog_entry(f"fill/repo-{number}"), b"", layout.OCTET_STREAM)

    with ThreadPoolExecutor(WRITERS) as pool:
        list(pool.map(repository, range(repositories)))
    documents.rebuild(chained, documents.catalog_kind(chained))
