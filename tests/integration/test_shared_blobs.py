"""Automatic layer sharing: a HEAD miss copies the blob from the repository its location record names."""

from __future__ import annotations

import httpx

from app.settings import Settings
from tests.conftest import BucketView
from tests.support.pushing import digest, push_blob
from tests.support.registry_server import running_registry

DATA = b"shared base layer" * 64


def test_head_miss_copies_from_the_repository_that_has_it(client: httpx.Client, bucket_view: BucketView) -> None:
    pushed = push_blob(client, "base/a", DATA)
    objects = bucket_view.objects()
    assert objects[f"v2/_blobs/{pushed}"] == (len(b"base/a"), "text/plain")
    assert f"v2/app/b/blobs/{pushed}" not in objects

    response = client.head(f"/v2/app/b/blobs/{pushed}")
    assert response.status_code == 200
    assert response.headers["Content-Length"] == str(len(DATA))
    assert response.headers["Docker-Content-Digest"] == pushed
    assert bucket_view.objects()[f"v2/app/b/blobs/{pushed}"] == (len(DATA), "application/octet-stream")
    assert client.get(f"/v2/app/b/blobs/{pushed}").content == DATA


def test_get_and_unknown_digests_do_not_share(client: httpx.Client, bucket_view: BucketView) -> None:
    pushed = push_blob(client, "base/a", DATA)
    assert client.get(f"/v2/app/b/blobs/{pushed}").status_code == 404
    before = bucket_view.keys()
    assert client.head(f"/v2/app/b/blobs/{digest(b'nowhere')}").status_code == 404
    assert bucket_view.keys() == before


def test_stale_record_is_a_miss(settings: Settings, bucket_view: BucketView) -> None:
    deleting = settings.model_copy(update={"delete_enabled": True})
    with running_registry(deleting) as url, httpx.Client(base_url=url) as client:
        pushed = push_blob(client, "base/a", DATA)
        assert client.delete(f"/v2/base/a/blobs/{pushed}").status_code == 202
        assert client.head(f"/v2/app/b/blobs/{pushed}").status_code == 404
        assert f"v2/app/b/blobs/{pushed}" not in bucket_view.objects()


def test_sharing_can_be_turned_off(settings: Settings, bucket_view: BucketView) -> None:
    off = settings.model_copy(update={"share_blobs": False})
    with running_registry(off) as url, httpx.Client(base_url=url) as client:
        pushed = push_blob(client, "base/a", DATA)
        assert client.head(f"/v2/app/b/blobs/{pushed}").status_code == 404
        assert f"v2/app/b/blobs/{pushed}" not in bucket_view.objects()
