"""Manifests, tags, catalog and referrers over HTTP, on both backends, checked against the bucket's layout."""

from __future__ import annotations

import json

import httpx
import pytest

from app import layout
from app.registry.catalog_page import page_objects
from app.settings import Settings
from tests.conftest import BucketView
from tests.support.pushing import (
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
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

NAME = "team/app"


def test_put_by_tag_writes_digest_then_tag_with_media_type(client: httpx.Client, bucket_view: BucketView) -> None:
    image = push_image(client, NAME, "1.0")
    objects = bucket_view.objects()
    assert objects[f"v2/{NAME}/manifests/{image.digest}"] == (len(image.manifest), OCI_MANIFEST)
    assert objects[f"v2/{NAME}/manifests/1.0"] == (len(image.manifest), OCI_MANIFEST)
    assert objects["v2/index.html"][1] == "text/html"
    assert objects[f"v2/{NAME}/tags/list"][1] == "application/json"
    assert objects["v2/_catalog"][1] == "application/json"


def test_put_reply_headers(client: httpx.Client) -> None:
    config = b"{}"
    push_blob(client, NAME, config)
    manifest = image_manifest(config, [])
    response = push_manifest(client, NAME, "v1", manifest, OCI_MANIFEST)
    assert response.status_code == 201
    assert response.headers["Docker-Content-Digest"] == digest(manifest)
    assert response.headers["Location"] == f"/v2/{NAME}/manifests/{digest(manifest)}"
    assert "OCI-Subject" not in response.headers


def test_get_returns_exact_bytes_type_and_digest(client: httpx.Client) -> None:
    image = push_image(client, NAME, "latest")
    for reference in ("latest", image.digest):
        response = client.get(f"/v2/{NAME}/manifests/{reference}")
        assert response.status_code == 200
        assert response.content == image.manifest
        assert response.headers["Content-Type"] == OCI_MANIFEST
        assert response.headers["Docker-Content-Digest"] == image.digest
        head = client.head(f"/v2/{NAME}/manifests/{reference}")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["Content-Length"] == str(len(image.manifest))


def test_put_by_digest_must_match_the_body(client: httpx.Client, bucket_view: BucketView) -> None:
    config = b'{"a":1}'
    push_blob(client, NAME, config)
    manifest = image_manifest(config, [])
    assert push_manifest(client, NAME, digest(manifest), manifest, OCI_MANIFEST).status_code == 201
    before = bucket_view.keys()
    wrong = push_manifest(client, NAME, digest(b"other"), manifest, OCI_MANIFEST)
    assert wrong.status_code == 400 and error_code(wrong) in ("DIGEST_INVALID", "MANIFEST_INVALID")
    assert bucket_view.keys() == before


def test_docker_schema2_manifest_is_stored_with_its_type(client: httpx.Client, bucket_view: BucketView) -> None:
    config = b'{"architecture":"amd64"}'
    push_blob(client, NAME, config)
    manifest = image_manifest(config, [], media_type=DOCKER_MANIFEST)
    assert push_manifest(client, NAME, "docker", manifest, DOCKER_MANIFEST).status_code == 201
    assert bucket_view.objects()[f"v2/{NAME}/manifests/docker"][1] == DOCKER_MANIFEST


def test_manifest_naming_a_missing_blob_writes_nothing(client: httpx.Client, bucket_view: BucketView) -> None:
    push_image(client, NAME, "seed")
    before = bucket_view.keys()
    manifest = image_manifest(b"{}", [b"never pushed"])
    response = push_manifest(client, NAME, "broken", manifest, OCI_MANIFEST)
    assert response.status_code == 400
    assert error_code(response) == "MANIFEST_BLOB_UNKNOWN"
    assert bucket_view.keys() == before


def test_index_needs_its_children_in_the_repository(client: httpx.Client, bucket_view: BucketView) -> None:
    child = push_image(client, NAME, "child")
    index = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [descriptor(OCI_MANIFEST, child.manifest)]}
    ).encode()
    assert push_manifest(client, NAME, "multi", index, OCI_INDEX).status_code == 201
    assert bucket_view.objects()[f"v2/{NAME}/manifests/multi"][1] == OCI_INDEX
    orphan = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [descriptor(OCI_MANIFEST, b"nothing")]}
    ).encode()
    before = bucket_view.keys()
    response = push_manifest(client, NAME, "orphan", orphan, OCI_INDEX)
    assert response.status_code == 400 and error_code(response) == "MANIFEST_BLOB_UNKNOWN"
    assert bucket_view.keys() == before


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{not json", OCI_MANIFEST),
        (b'{"schemaVersion":2,"mediaType":"' + DOCKER_MANIFEST.encode() + b'"}', OCI_MANIFEST),
        (b'{"schemaVersion":2}', "text/plain"),
    ],
)
def test_invalid_manifests_are_manifest_invalid(
    client: httpx.Client, bucket_view: BucketView, body: bytes, content_type: str
) -> None:
    before = bucket_view.keys()
    response = push_manifest(client, NAME, "bad", body, content_type)
    assert response.status_code == 400 and error_code(response) == "MANIFEST_INVALID"
    assert bucket_view.keys() == before


def test_manifest_over_the_size_limit_is_413(client: httpx.Client, bucket_view: BucketView) -> None:
    before = bucket_view.keys()
    huge = b'{"schemaVersion":2,"x":"' + b"a" * (4 * 1024 * 1024) + b'"}'
    response = push_manifest(client, NAME, "huge", huge, OCI_MANIFEST)
    assert response.status_code == 413
    assert bucket_view.keys() == before


def test_invalid_tag_and_name_are_rejected(client: httpx.Client, bucket_view: BucketView) -> None:
    image = image_manifest(b"{}", [])
    before = bucket_view.keys()
    bad_tag = push_manifest(client, NAME, "-bad", image, OCI_MANIFEST)
    assert bad_tag.status_code == 400 and error_code(bad_tag) == "TAG_INVALID"
    bad_name = push_manifest(client, "Team/App", "ok", image, OCI_MANIFEST)
    assert bad_name.status_code == 403 and error_code(bad_name) == "DENIED"  # docker does not retry it
    assert bad_name.json()["errors"][0]["message"] == "repository names are lowercase"
    assert bucket_view.keys() == before


def test_unknown_manifest_is_404(client: httpx.Client) -> None:
    response = client.get(f"/v2/{NAME}/manifests/nope")
    assert response.status_code == 404 and error_code(response) == "MANIFEST_UNKNOWN"


def test_tags_list_is_sorted_and_pages_with_link(client: httpx.Client) -> None:
    for index, tag in enumerate(["b", "a", "d", "c", "e"]):
        push_image(client, NAME, tag, seed=index)
    full = client.get(f"/v2/{NAME}/tags/list")
    assert full.json() == {"name": NAME, "tags": ["a", "b", "c", "d", "e"]}
    page = client.get(f"/v2/{NAME}/tags/list", params={"n": 2})
    assert page.json()["tags"] == ["a", "b"]
    assert page.headers["Link"] == f'</v2/{NAME}/tags/list?n=2&last=b>; rel="next"'
    following = client.get(f"/v2/{NAME}/tags/list", params={"n": 2, "last": "b"})
    assert following.json()["tags"] == ["c", "d"]
    last = client.get(f"/v2/{NAME}/tags/list", params={"n": 2, "last": "d"})
    assert last.json()["tags"] == ["e"] and "Link" not in last.headers
    assert client.get(f"/v2/{NAME}/tags/list", params={"n": 0}).json()["tags"] == []
    assert client.get(f"/v2/{NAME}/tags/list", params={"n": "x"}).status_code == 400


def test_tags_list_of_unknown_repository_is_name_unknown(client: httpx.Client) -> None:
    response = client.get("/v2/nobody/tags/list")
    assert response.status_code == 404 and error_code(response) == "NAME_UNKNOWN"


def test_catalog_lists_repositories_with_paging(client: httpx.Client) -> None:
    for index, name in enumerate(["zeta/app", "alpha", "mid/x"]):
        push_image(client, name, "1", seed=index)
    assert client.get("/v2/_catalog").json() == {"repositories": ["alpha", "mid/x", "zeta/app"]}
    page = client.get("/v2/_catalog", params={"n": 1})
    assert page.json()["repositories"] == ["alpha"]
    assert page.headers["Link"] == '</v2/_catalog?n=1&last=alpha>; rel="next"'


def test_referrers_index_and_oci_subject(client: httpx.Client, bucket_view: BucketView) -> None:
    image = push_image(client, NAME, "signed")
    empty = client.get(f"/v2/{NAME}/referrers/{image.digest}")
    assert empty.status_code == 200 and empty.json()["manifests"] == []
    config = b"{}"
    push_blob(client, NAME, config)
    subject = descriptor(OCI_MANIFEST, image.manifest)
    signature = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.signature",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": digest(config), "size": 2},
            "layers": [],
            "subject": subject,
            "annotations": {"org.example": "sig"},
        }
    ).encode()
    response = push_manifest(client, NAME, digest(signature), signature, OCI_MANIFEST)
    assert response.status_code == 201
    assert response.headers["OCI-Subject"] == image.digest
    sbom = image_manifest(config, [], subject=subject)
    push_manifest(client, NAME, digest(sbom), sbom, OCI_MANIFEST)

    listing = client.get(f"/v2/{NAME}/referrers/{image.digest}")
    assert listing.headers["Content-Type"].startswith(OCI_INDEX)
    entries = {m["digest"]: m for m in listing.json()["manifests"]}
    assert entries[digest(signature)]["artifactType"] == "application/vnd.example.signature"
    assert entries[digest(signature)]["annotations"] == {"org.example": "sig"}
    assert entries[digest(sbom)]["artifactType"] == OCI_CONFIG
    filtered = client.get(
        f"/v2/{NAME}/referrers/{image.digest}", params={"artifactType": "application/vnd.example.signature"}
    )
    assert filtered.headers["OCI-Filters-Applied"] == "artifactType"
    assert [m["digest"] for m in filtered.json()["manifests"]] == [digest(signature)]
    key = f"v2/{NAME}/referrers/{image.digest}"
    assert bucket_view.objects()[key][1] == OCI_INDEX


def test_subject_may_point_at_a_manifest_not_pushed_yet(client: httpx.Client) -> None:
    config = b"{}"
    push_blob(client, NAME, config)
    absent = {"mediaType": OCI_MANIFEST, "digest": digest(b"future"), "size": 6}
    artifact = image_manifest(config, [], subject=absent)
    assert push_manifest(client, NAME, digest(artifact), artifact, OCI_MANIFEST).status_code == 201


def many_layers(count: int) -> bytes:
    """An image manifest naming `count` layers that were never pushed."""
    layers = [{"mediaType": OCI_CONFIG, "digest": digest(str(i).encode()), "size": 1} for i in range(count)]
    config = {"mediaType": OCI_CONFIG, "digest": digest(b"config"), "size": 6}
    document = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers}
    return json.dumps(document).encode()


def test_a_manifest_naming_too_many_descriptors_is_refused_at_once_with_a_short_answer(
    client: httpx.Client, bucket_view: BucketView
) -> None:
    body = many_layers(25_000)  # about 3.5 MB: within the manifest size limit
    refused = push_manifest(client, NAME, "many", body, OCI_MANIFEST)
    assert refused.status_code == 400
    assert error_code(refused) == "MANIFEST_INVALID"
    assert refused.json()["errors"][0]["detail"] == {"descriptors": 25_000, "limit": 1000}
    assert len(refused.content) < 300
    stored = bucket_view.keys()
    written = {key for key in stored if not key.startswith(layout.GC_PARTICIPANTS)}  # but the replica's presence
    assert written == {item.key for item in page_objects()}  # only the page written at start-up


def test_the_descriptor_limit_is_a_setting(settings: Settings) -> None:
    settings = settings.model_copy(update={"max_manifest_descriptors": 3})
    with running_registry(settings) as url, httpx.Client(base_url=url) as client:
        config = b'{"architecture":"amd64","os":"linux"}'
        layers = [b"one", b"two", b"three"]
        for blob in (config, *layers):
            push_blob(client, NAME, blob)
        assert push_manifest(client, NAME, "three", image_manifest(config, layers), OCI_MANIFEST).status_code == 201
        four = push_manifest(client, NAME, "four", image_manifest(config, [*layers, b"four"]), OCI_MANIFEST)
        assert four.status_code == 400 and four.json()["errors"][0]["detail"]["limit"] == 3
