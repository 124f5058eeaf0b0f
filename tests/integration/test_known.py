"""What the service remembers about the bucket never lets a manifest through that names something missing."""

from __future__ import annotations

import httpx

from app.settings import Settings
from tests.conftest import BucketView
from tests.support.pushing import OCI_MANIFEST, digest, image_manifest, push_blob
from tests.support.registry_server import running_registry

NAME = "known/app"
CONFIG = b'{"architecture":"amd64","os":"linux"}'
LAYER = b"a layer one replica deletes" * 50


def put_manifest(client: httpx.Client, tag: str) -> httpx.Response:
    body = image_manifest(CONFIG, [LAYER])
    return client.put(f"/v2/{NAME}/manifests/{tag}", content=body, headers={"Content-Type": OCI_MANIFEST})


def test_a_blob_deleted_through_another_replica_is_missing_for_the_manifest(
    settings: Settings, bucket_view: BucketView
) -> None:
    """The replica that pushed the blob remembers writing it; with deletes on, it checks the store all the same."""
    deleting = settings.model_copy(update={"delete_enabled": True})
    with (
        running_registry(deleting) as pushing_url,
        running_registry(deleting) as deleting_url,
        httpx.Client(base_url=pushing_url) as pushing,
        httpx.Client(base_url=deleting_url) as other,
    ):
        push_blob(pushing, NAME, CONFIG)
        push_blob(pushing, NAME, LAYER)
        assert pushing.head(f"/v2/{NAME}/blobs/{digest(LAYER)}").status_code == 200
        assert other.delete(f"/v2/{NAME}/blobs/{digest(LAYER)}").status_code == 202

        refused = put_manifest(pushing, "v1")
        assert refused.status_code == 400
        assert refused.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
        assert refused.json()["errors"][0]["detail"]["missing"] == [digest(LAYER)]
        assert f"v2/{NAME}/manifests/v1" not in set(bucket_view.keys())

        push_blob(pushing, NAME, LAYER)  # pushed again: the manifest goes through
        assert put_manifest(pushing, "v1").status_code == 201


def test_a_blob_deleted_through_this_replica_is_forgotten_at_once(settings: Settings) -> None:
    deleting = settings.model_copy(update={"delete_enabled": True})
    with running_registry(deleting) as url, httpx.Client(base_url=url) as client:
        push_blob(client, NAME, CONFIG)
        push_blob(client, NAME, LAYER)
        assert client.delete(f"/v2/{NAME}/blobs/{digest(LAYER)}").status_code == 202
        assert client.head(f"/v2/{NAME}/blobs/{digest(LAYER)}").status_code == 404
        assert put_manifest(client, "v1").status_code == 400


def test_a_missing_child_of_an_index_is_refused(client: httpx.Client) -> None:
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": digest(b"no such manifest"), "size": 16}],
    }
    body = httpx.Request("PUT", "http://x", json=index).content
    refused = client.put(
        f"/v2/{NAME}/manifests/multi", content=body, headers={"Content-Type": "application/vnd.oci.image.index.v1+json"}
    )
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
