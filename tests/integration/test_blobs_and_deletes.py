"""Blob reads (ranges, redirects to the public bucket) and deletes, on both backends."""

from __future__ import annotations

import httpx
import pytest

from app.settings import Settings
from tests.conftest import BucketView
from tests.support.pushing import digest, push_blob, push_image
from tests.support.registry_server import running_registry

NAME = "team/app"
DATA = bytes(range(256)) * 8  # 2048 bytes


@pytest.mark.parametrize(
    ("header", "start", "end"), [("bytes=0-99", 0, 99), ("bytes=2000-", 2000, 2047), ("bytes=-48", 2000, 2047)]
)
def test_single_range_is_206(client: httpx.Client, header: str, start: int, end: int) -> None:
    pushed = push_blob(client, NAME, DATA)
    response = client.get(f"/v2/{NAME}/blobs/{pushed}", headers={"Range": header})
    assert response.status_code == 206
    assert response.content == DATA[start : end + 1]
    assert response.headers["Content-Range"] == f"bytes {start}-{end}/{len(DATA)}"


def test_unsatisfiable_range_is_416(client: httpx.Client) -> None:
    pushed = push_blob(client, NAME, DATA)
    response = client.get(f"/v2/{NAME}/blobs/{pushed}", headers={"Range": "bytes=5000-"})
    assert response.status_code == 416
    assert response.headers["Content-Range"] == f"bytes */{len(DATA)}"


def test_unknown_blob_is_404(client: httpx.Client) -> None:
    response = client.head(f"/v2/{NAME}/blobs/{digest(b'x')}")
    assert response.status_code == 404
    response = client.get(f"/v2/{NAME}/blobs/{digest(b'x')}")
    assert response.json()["errors"][0]["code"] == "BLOB_UNKNOWN"


def test_api_version_check(client: httpx.Client) -> None:
    for method in ("GET", "HEAD"):
        response = client.request(method, "/v2/")
        assert response.status_code == 200
        assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"


def test_unknown_endpoint_and_method_are_oci_errors(client: httpx.Client) -> None:
    missing = client.get("/v3/nothing")
    assert missing.status_code == 404 and missing.json()["errors"][0]["code"] == "UNSUPPORTED"
    wrong_method = client.request("PATCH", "/v2/")
    assert wrong_method.status_code == 405 and wrong_method.json()["errors"][0]["code"] == "UNSUPPORTED"


def test_deletes_are_405_when_disabled(client: httpx.Client, bucket_view: BucketView) -> None:
    image = push_image(client, NAME, "keep")
    before = bucket_view.keys()
    for path in (
        f"/v2/{NAME}/manifests/keep",
        f"/v2/{NAME}/manifests/{image.digest}",
        f"/v2/{NAME}/blobs/{digest(image.config)}",
    ):
        response = client.delete(path)
        assert response.status_code == 405
        (error,) = response.json()["errors"]
        assert error["code"] == "UNSUPPORTED" and "REGISTRY_DELETE_ENABLED=true" in error["message"], error
    assert bucket_view.keys() == before


@pytest.fixture
def deleting_client(settings: Settings) -> httpx.Client:
    with running_registry(settings.model_copy(update={"delete_enabled": True})) as url, httpx.Client(base_url=url) as c:
        yield c


def test_delete_tag_keeps_the_manifest_and_updates_tags(deleting_client: httpx.Client, bucket_view: BucketView) -> None:
    client = deleting_client
    image = push_image(client, NAME, "a")
    push_image(client, NAME, "b")
    assert client.delete(f"/v2/{NAME}/manifests/a").status_code == 202
    assert client.get(f"/v2/{NAME}/manifests/a").status_code == 404
    assert client.get(f"/v2/{NAME}/manifests/{image.digest}").status_code == 200
    assert client.get(f"/v2/{NAME}/tags/list").json()["tags"] == ["b"]


def test_delete_by_digest_removes_its_tags_and_referrer_entry(
    deleting_client: httpx.Client, bucket_view: BucketView
) -> None:
    client = deleting_client
    image = push_image(client, NAME, "x", seed=1)
    push_image(client, NAME, "y", seed=2)
    assert client.delete(f"/v2/{NAME}/manifests/{image.digest}").status_code == 202
    keys = bucket_view.keys()
    assert f"v2/{NAME}/manifests/{image.digest}" not in keys
    assert f"v2/{NAME}/manifests/x" not in keys
    assert client.get(f"/v2/{NAME}/tags/list").json()["tags"] == ["y"]
    assert client.delete(f"/v2/{NAME}/manifests/{image.digest}").status_code == 404


def test_delete_blob(deleting_client: httpx.Client) -> None:
    pushed = push_blob(deleting_client, NAME, DATA)
    assert deleting_client.delete(f"/v2/{NAME}/blobs/{pushed}").status_code == 202
    assert deleting_client.head(f"/v2/{NAME}/blobs/{pushed}").status_code == 404
    assert deleting_client.delete(f"/v2/{NAME}/blobs/{pushed}").status_code == 404


def test_blob_get_redirects_to_the_public_url(settings: Settings) -> None:
    public = settings.model_copy(update={"public_url": "https://registry.example.com"})
    with running_registry(public) as url, httpx.Client(base_url=url) as client:
        pushed = push_blob(client, NAME, DATA)
        response = client.get(f"/v2/{NAME}/blobs/{pushed}")
        assert response.status_code == 307
        assert response.headers["Location"] == f"https://registry.example.com/v2/{NAME}/blobs/{pushed}"
        assert client.head(f"/v2/{NAME}/blobs/{pushed}").status_code == 200
        assert client.get(f"/v2/{NAME}/blobs/{digest(b'none')}").status_code == 404


def test_deleting_the_only_tag_leaves_an_empty_tags_list(settings: Settings) -> None:
    """The conformance suite's manifest delete: SeaweedFS then lists the emptied folder as a key equal to the
    prefix (a directory marker), which must never read as a tag named ""."""
    deleting = settings.model_copy(update={"delete_enabled": True})
    with running_registry(deleting) as url, httpx.Client(base_url=url) as client:
        image = push_image(client, NAME, "only")
        assert client.delete(f"/v2/{NAME}/manifests/{image.digest}").status_code == 202
        assert client.get(f"/v2/{NAME}/tags/list").json()["tags"] == []
        assert client.get(f"/v2/{NAME}/manifests/only").status_code == 404
