"""Manifest references the conformance suites probe: names no tag can have, several tags in one push
(`?tag=`), manifests named by sha512, and sparse manifests (behind REGISTRY_SPARSE_MANIFESTS), on both backends."""

from __future__ import annotations

import hashlib
import io
import json

import httpx
import pytest

from app.settings import Settings
from app.storage import open_storage
from app.tools.fsck import fsck
from app.tools.gc import gc
from tests.conftest import BucketView
from tests.support.pushing import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    descriptor,
    digest,
    error_code,
    image_manifest,
    push_blob,
    push_image,
    push_manifest,
)
from tests.support.registry_server import running_registry

NAME = "conformance/app"


def sha512(data: bytes) -> str:
    return "sha512:" + hashlib.sha512(data).hexdigest()


def push_blob_sha512(client: httpx.Client, data: bytes) -> dict[str, object]:
    started = client.post(f"/v2/{NAME}/blobs/uploads/")
    finished = client.put(started.headers["Location"], params={"digest": sha512(data)}, content=data)
    assert finished.status_code == 201, finished.text
    return {"digest": sha512(data), "size": len(data)}


def sha512_image(client: httpx.Client, seed: str) -> bytes:
    """An image whose config and layer are sha512 descriptors, its blobs pushed."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    layer = f"sha512 layer {seed}".encode() * 50
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, **push_blob_sha512(client, config)},
        "layers": [{"mediaType": OCI_LAYER, **push_blob_sha512(client, layer)}],
    }
    return json.dumps(document).encode()


def test_get_and_head_of_a_name_no_tag_can_have_is_404(client: httpx.Client, bucket_view: BucketView) -> None:
    for method in ("GET", "HEAD"):
        response = client.request(method, f"/v2/{NAME}/manifests/.INVALID_MANIFEST_NAME")
        assert response.status_code == 404, method
    assert error_code(client.get(f"/v2/{NAME}/manifests/.INVALID_MANIFEST_NAME")) == "MANIFEST_UNKNOWN"
    before = bucket_view.keys()
    refused = push_manifest(client, NAME, ".INVALID_MANIFEST_NAME", image_manifest(b"{}", []), OCI_MANIFEST)
    assert refused.status_code == 400 and error_code(refused) == "TAG_INVALID"
    assert bucket_view.keys() == before


def test_push_by_digest_with_tag_parameters_stores_each_tag(client: httpx.Client) -> None:
    image = push_image(client, NAME, "first")
    response = push_manifest(client, NAME, f"{image.digest}?tag=a&tag=b", image.manifest, OCI_MANIFEST)
    assert response.status_code == 201, response.text
    assert response.headers.get_list("OCI-Tag") == ["a", "b"]
    assert response.headers["Docker-Content-Digest"] == image.digest
    for tag in ("a", "b"):
        pulled = client.get(f"/v2/{NAME}/manifests/{tag}")
        assert pulled.content == image.manifest and pulled.headers["Docker-Content-Digest"] == image.digest
    assert {"a", "b", "first"} <= set(client.get(f"/v2/{NAME}/tags/list").json()["tags"])


def test_a_push_by_tag_answers_its_tag(client: httpx.Client) -> None:
    config = b"{}"
    push_blob(client, NAME, config)
    response = push_manifest(client, NAME, "solo", image_manifest(config, []), OCI_MANIFEST)
    assert response.headers.get_list("OCI-Tag") == ["solo"]


def test_one_invalid_tag_parameter_refuses_the_whole_push(client: httpx.Client, bucket_view: BucketView) -> None:
    image = push_image(client, NAME, "kept")
    before = bucket_view.keys()
    response = push_manifest(client, NAME, f"{image.digest}?tag=fine&tag=-bad", image.manifest, OCI_MANIFEST)
    assert response.status_code == 400 and error_code(response) == "TAG_INVALID"
    assert bucket_view.keys() == before


def test_a_sha512_manifest_pushed_by_digest_with_tags_is_named_by_sha512(
    client: httpx.Client, settings: Settings
) -> None:
    manifest = sha512_image(client, "by-digest")
    response = push_manifest(client, NAME, f"{sha512(manifest)}?tag=t512", manifest, OCI_MANIFEST)
    assert response.status_code == 201, response.text
    assert response.headers["Docker-Content-Digest"] == sha512(manifest)
    assert response.headers["Location"] == f"/v2/{NAME}/manifests/{sha512(manifest)}"
    assert response.headers.get_list("OCI-Tag") == ["t512"]
    for reference in ("t512", sha512(manifest)):
        pulled = client.head(f"/v2/{NAME}/manifests/{reference}")
        assert pulled.status_code == 200 and pulled.headers["Docker-Content-Digest"] == sha512(manifest)
    assert client.get(f"/v2/{NAME}/manifests/{digest(manifest)}").status_code == 404
    assert_tools_keep_it(settings, sha512(manifest))


def test_a_manifest_pushed_by_tag_is_named_by_the_digest_the_client_gives(
    client: httpx.Client, settings: Settings, bucket_view: BucketView
) -> None:
    manifest = sha512_image(client, "by-tag")
    before = bucket_view.keys()
    wrong = push_manifest(client, NAME, f"named?digest={sha512(manifest + b' ')}", manifest, OCI_MANIFEST)
    assert wrong.status_code == 400 and error_code(wrong) == "DIGEST_INVALID"
    assert bucket_view.keys() == before
    response = push_manifest(client, NAME, f"named?digest={sha512(manifest)}", manifest, OCI_MANIFEST)
    assert response.status_code == 201, response.text
    assert response.headers["Docker-Content-Digest"] == sha512(manifest)
    assert client.get(f"/v2/{NAME}/manifests/named").headers["Docker-Content-Digest"] == sha512(manifest)
    assert_tools_keep_it(settings, sha512(manifest))
    unnamed = sha512_image(client, "unnamed")  # not asked for: the canonical sha256, whatever the descriptors
    plain = push_manifest(client, NAME, "plain", unnamed, OCI_MANIFEST)
    assert plain.headers["Docker-Content-Digest"] == digest(unnamed)
    assert client.head(f"/v2/{NAME}/manifests/plain").headers["Docker-Content-Digest"] == digest(unnamed)


def assert_tools_keep_it(settings: Settings, named: str) -> None:
    """fsck finds a sha512-named tag clean, and gc does not take its manifest for garbage."""
    storage = open_storage(settings, create=False)
    assert fsck(storage, out=io.StringIO()).left == 0
    findings = io.StringIO()
    gc(storage, grace_seconds=0, out=findings)
    assert named not in findings.getvalue()


@pytest.mark.parametrize("shape", ["image-missing-a-layer", "index-missing-a-child"])
def test_sparse_manifests_only_with_the_setting(client: httpx.Client, settings: Settings, shape: str) -> None:
    config = b'{"architecture":"amd64","os":"linux"}'
    push_blob(client, NAME, config)
    absent = b"a layer nobody pushed"
    if shape == "image-missing-a-layer":
        body, media_type = image_manifest(config, [absent]), OCI_MANIFEST
    else:
        present = push_image(client, NAME, "amd64").manifest
        children = [descriptor(OCI_MANIFEST, present), descriptor(OCI_MANIFEST, image_manifest(config, [absent]))]
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}).encode()
        media_type = OCI_INDEX
    refused = push_manifest(client, NAME, "sparse", body, media_type)
    assert refused.status_code == 400 and error_code(refused) == "MANIFEST_BLOB_UNKNOWN"
    with running_registry(settings.model_copy(update={"sparse_manifests": True})) as url:
        accepted = httpx.put(f"{url}/v2/{NAME}/manifests/sparse", content=body, headers={"Content-Type": media_type})
        assert accepted.status_code == 201, accepted.text
        assert httpx.get(f"{url}/v2/{NAME}/manifests/sparse").content == body
