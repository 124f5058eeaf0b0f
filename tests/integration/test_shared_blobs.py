"""Automatic layer sharing: a HEAD miss copies the blob from a repository known to hold it.

Within one process the service remembers where it put each blob; across replicas and restarts the location
record `v2/_blobs/<digest>` (written for blobs of at least REGISTRY_SHARE_MIN_BYTES) says where one lives.
"""

from __future__ import annotations

import time

import httpx

from app.settings import Settings
from tests.conftest import BucketView
from tests.support.pushing import digest, push_blob
from tests.support.registry_server import running_registry

DATA = b"shared base layer" * 64


def wait_for_key(bucket_view: BucketView, key: str, timeout: float = 10.0) -> None:
    """Records are written after the client has its answer: give the background write a moment."""
    deadline = time.monotonic() + timeout
    while key not in set(bucket_view.keys()):
        assert time.monotonic() < deadline, f"{key} never appeared"
        time.sleep(0.05)


def test_head_miss_copies_from_the_repository_that_has_it(client: httpx.Client, bucket_view: BucketView) -> None:
    pushed = push_blob(client, "base/a", DATA)
    assert f"v2/app/b/blobs/{pushed}" not in bucket_view.objects()

    response = client.head(f"/v2/app/b/blobs/{pushed}")
    assert response.status_code == 200
    assert response.headers["Content-Length"] == str(len(DATA))
    assert response.headers["Docker-Content-Digest"] == pushed
    objects = bucket_view.objects()
    assert objects[f"v2/app/b/blobs/{pushed}"] == (len(DATA), "application/octet-stream")
    assert f"v2/_blobs/{pushed}" not in objects, "a blob below REGISTRY_SHARE_MIN_BYTES gets no location record"
    assert client.get(f"/v2/app/b/blobs/{pushed}").content == DATA


def test_another_replica_shares_through_the_location_record(settings: Settings, bucket_view: BucketView) -> None:
    recording = settings.model_copy(update={"share_min_bytes": 0})
    with running_registry(recording) as url, httpx.Client(base_url=url) as client:
        pushed = push_blob(client, "base/a", DATA)
        wait_for_key(bucket_view, f"v2/_blobs/{pushed}")
    assert bucket_view.objects()[f"v2/_blobs/{pushed}"] == (len(b"base/a"), "text/plain")

    with running_registry(recording) as url, httpx.Client(base_url=url) as other:  # knows nothing but the records
        response = other.head(f"/v2/app/b/blobs/{pushed}")
        assert response.status_code == 200
        assert response.headers["Content-Length"] == str(len(DATA))
    assert bucket_view.objects()[f"v2/app/b/blobs/{pushed}"] == (len(DATA), "application/octet-stream")


def test_get_and_unknown_digests_do_not_share(client: httpx.Client, bucket_view: BucketView) -> None:
    pushed = push_blob(client, "base/a", DATA)
    assert client.get(f"/v2/app/b/blobs/{pushed}").status_code == 404
    before = bucket_view.keys()
    assert client.head(f"/v2/app/b/blobs/{digest(b'nowhere')}").status_code == 404
    assert bucket_view.keys() == before


def test_stale_record_is_a_miss(settings: Settings, bucket_view: BucketView) -> None:
    deleting = settings.model_copy(update={"delete_enabled": True, "share_min_bytes": 0})
    with running_registry(deleting) as url, httpx.Client(base_url=url) as client:
        pushed = push_blob(client, "base/a", DATA)
        wait_for_key(bucket_view, f"v2/_blobs/{pushed}")
        assert client.delete(f"/v2/base/a/blobs/{pushed}").status_code == 202
        assert client.head(f"/v2/app/b/blobs/{pushed}").status_code == 404
    with running_registry(deleting) as url, httpx.Client(base_url=url) as other:
        assert other.head(f"/v2/app/b/blobs/{pushed}").status_code == 404
    assert f"v2/app/b/blobs/{pushed}" not in bucket_view.objects()


def test_a_blob_deleted_from_a_repository_stays_deleted_there(settings: Settings, bucket_view: BucketView) -> None:
    """The conformance suite's blob-delete after a mount: sharing must not bring the blob back on the next HEAD."""
    deleting = settings.model_copy(update={"delete_enabled": True})
    with running_registry(deleting) as url, httpx.Client(base_url=url) as client:
        pushed = push_blob(client, "repo2", DATA)
        mounted = client.post("/v2/repo1/blobs/uploads/", params={"mount": pushed, "from": "repo2"})
        assert mounted.status_code == 201
        assert client.delete(f"/v2/repo1/blobs/{pushed}").status_code == 202
        assert client.head(f"/v2/repo1/blobs/{pushed}").status_code == 404
        assert f"v2/repo1/blobs/{pushed}" not in bucket_view.objects()

        push_blob(client, "repo1", DATA)  # pushed again: there again
        assert client.head(f"/v2/repo1/blobs/{pushed}").status_code == 200


def test_sharing_can_be_turned_off(settings: Settings, bucket_view: BucketView) -> None:
    off = settings.model_copy(update={"share_blobs": False})
    with running_registry(off) as url, httpx.Client(base_url=url) as client:
        pushed = push_blob(client, "base/a", DATA)
        assert client.head(f"/v2/app/b/blobs/{pushed}").status_code == 404
        assert f"v2/app/b/blobs/{pushed}" not in bucket_view.objects()
