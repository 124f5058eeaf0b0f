"""The registry's promises, checked over a whole store after concurrent writers are done with it.

Each function looks at everything in the store (not at what one test pushed), so a test that fires many writers
at once asserts the invariant itself: every blob's bytes hash to its key; every tag resolves to a manifest whose
content is all there; every tag is in its repository's tags list.
"""

from __future__ import annotations

import hashlib
import json

from app import layout
from app.registry.documents import list_tags
from app.registry.formats import parse_manifest
from app.storage import Storage


def repositories(storage: Storage) -> set[str]:
    names = set()
    for key in storage.list("v2/"):
        for folder in ("/blobs/", "/manifests/"):
            if folder in key and not key.startswith("v2/_"):
                names.add(key[len("v2/") : key.index(folder)])
    return names


def blob_digests(storage: Storage, name: str) -> list[str]:
    return sorted(storage.list_children(layout.blobs_dir(name)))


def assert_every_blob_hashes_to_its_key(storage: Storage) -> int:
    """Re-hash every blob of every repository; returns how many were checked."""
    checked = 0
    for name in repositories(storage):
        for digest in blob_digests(storage, name):
            algorithm, _, expected = digest.partition(":")
            hasher = hashlib.new(algorithm)
            for chunk in storage.read(layout.blob(name, digest)):
                hasher.update(chunk)
            assert hasher.hexdigest() == expected, f"{layout.blob(name, digest)} holds other bytes"
            checked += 1
    return checked


def assert_every_tag_pulls(storage: Storage) -> None:
    """Every tag's manifest is also under its digest, and everything it names (blobs, children) is there."""
    for name in repositories(storage):
        for tag in list_tags(storage, name):
            found = storage.read_small(layout.manifest(name, tag))
            if found is None:  # deleted since the listing
                continue
            _assert_complete(storage, name, found[0], found[1].content_type, f"{name}:{tag}")


def _assert_complete(storage: Storage, name: str, body: bytes, media_type: str, what: str) -> None:
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    if storage.stat(layout.manifest(name, digest)) is None:
        sha512 = "sha512:" + hashlib.sha512(body).hexdigest()
        assert storage.stat(layout.manifest(name, sha512)) is not None, f"{what}: no manifest under its digest"
    manifest = parse_manifest(body, media_type)
    for blob in manifest.blobs:
        if not blob.external:
            assert storage.stat(layout.blob(name, blob.digest)) is not None, f"{what}: blob {blob.digest} missing"
    for child in manifest.children:
        found = storage.read_small(layout.manifest(name, child.digest))
        assert found is not None, f"{what}: child {child.digest} missing"
        _assert_complete(storage, name, found[0], found[1].content_type, f"{what} > {child.digest}")


def assert_tags_listed(storage: Storage, name: str) -> list[str]:
    """The repository's tags list names exactly its tags; returns them."""
    found = storage.read_small(layout.tags_list(name))
    assert found is not None, f"{name} has no tags list"
    listed = json.loads(found[0])["tags"]
    assert listed == list_tags(storage, name), f"{name}: tags/list says {listed}"
    return listed
