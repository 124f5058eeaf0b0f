"""Overlapped multipart commits on a real S3 server (SeaweedFS): parts go to the bucket while the client uploads.

Parts are 5 MiB here (the S3 minimum) so that a 12 MiB blob crosses two part boundaries. What must hold: the
blob is visible under its key only after the digest is verified; a mismatch, a cancel or the purge leaves the
bucket untouched and no multipart upload behind; a restart or another replica finishes the upload correctly.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.registry import build_registry
from app.registry.uploads import Body
from app.settings import Settings
from tests.conftest import s3_settings
from tests.support.pushing import digest
from tests.support.registry_server import running_registry
from tests.support.seaweed import S3Server

MiB = 1024 * 1024
PART = 5 * MiB
NAME = "team/big"
DATA = random.Random(6).randbytes(2 * PART + 3 * MiB)  # two full parts and a tail


@pytest.fixture
def settings(s3_server: S3Server, bucket: str, tmp_path: Path) -> Settings:
    return s3_settings(s3_server, bucket, tmp_path, s3_part_size=PART)


@pytest.fixture
def client(settings: Settings) -> Iterator[httpx.Client]:
    """A client of a registry whose start-up writes (its gc presence among them) are done, so a test's "before"
    is not overtaken by them on a loaded machine."""
    registry = build_registry(settings)
    with running_registry(settings, registry) as url, httpx.Client(base_url=url, timeout=60) as http:
        assert registry.started_up.wait(30)
        yield http


def pieces(data: bytes, size: int = 256 * 1024) -> Iterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]


def start(client: httpx.Client) -> str:
    response = client.post(f"/v2/{NAME}/blobs/uploads/")
    assert response.status_code == 202
    return response.headers["Location"]


def multipart_uploads(s3: S3Server, bucket: str) -> list[dict[str, Any]]:
    return s3.admin.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def keys(s3: S3Server, bucket: str) -> set[str]:
    return set(s3.objects(bucket))


def test_full_parts_reach_the_bucket_before_the_put_and_stay_invisible(
    client: httpx.Client, s3_server: S3Server, bucket: str
) -> None:
    location = start(client)
    assert client.patch(location, content=pieces(DATA)).status_code == 202

    [pending] = multipart_uploads(s3_server, bucket)
    parts = s3_server.admin.list_parts(Bucket=bucket, Key=pending["Key"], UploadId=pending["UploadId"])["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in parts] == [(1, PART), (2, PART)]
    assert not any("/blobs/" in key or "_uploads" in key for key in keys(s3_server, bucket))

    assert client.put(location, params={"digest": digest(DATA)}).status_code == 201
    head = s3_server.admin.head_object(Bucket=bucket, Key=f"v2/{NAME}/blobs/{digest(DATA)}")
    assert (head["ContentLength"], head["ContentType"]) == (len(DATA), "application/octet-stream")
    assert head["CacheControl"] == "public, max-age=31536000, immutable"
    assert client.get(f"/v2/{NAME}/blobs/{digest(DATA)}").content == DATA
    assert multipart_uploads(s3_server, bucket) == []
    assert not any("_uploads" in key for key in keys(s3_server, bucket))


def test_digest_mismatch_aborts_the_parts_and_leaves_the_bucket_untouched(
    client: httpx.Client, s3_server: S3Server, bucket: str
) -> None:
    before = keys(s3_server, bucket)
    location = start(client)
    client.patch(location, content=pieces(DATA))
    assert len(multipart_uploads(s3_server, bucket)) == 1

    response = client.put(location, params={"digest": digest(b"other bytes")})
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "DIGEST_INVALID"
    assert keys(s3_server, bucket) == before
    assert multipart_uploads(s3_server, bucket) == []


def test_cancel_aborts_the_parts(client: httpx.Client, s3_server: S3Server, bucket: str) -> None:
    location = start(client)
    client.patch(location, content=pieces(DATA))
    assert client.delete(location).status_code == 204
    assert multipart_uploads(s3_server, bucket) == []


def test_a_blob_already_there_aborts_the_second_upload(client: httpx.Client, s3_server: S3Server, bucket: str) -> None:
    for _ in range(2):
        location = start(client)
        client.patch(location, content=pieces(DATA))
        assert client.put(location, params={"digest": digest(DATA)}).status_code == 201
    assert multipart_uploads(s3_server, bucket) == []
    assert client.get(f"/v2/{NAME}/blobs/{digest(DATA)}").content == DATA


def test_a_restart_or_another_replica_finishes_the_upload(settings: Settings, s3_server: S3Server, bucket: str) -> None:
    """Chunks through one process, the rest and the PUT through another sharing the staging directory."""
    cut = PART + MiB
    with running_registry(settings) as url, httpx.Client(base_url=url, timeout=60) as first:
        location = start(first)
        headers = {"Content-Range": f"0-{cut - 1}"}
        assert first.patch(location, content=DATA[:cut], headers=headers).status_code == 202
    with running_registry(settings) as url, httpx.Client(base_url=url, timeout=60) as second:
        headers = {"Content-Range": f"{cut}-{len(DATA) - 1}"}
        assert second.patch(location, content=DATA[cut:], headers=headers).status_code == 202
        assert second.put(location, params={"digest": digest(DATA)}).status_code == 201
        assert second.get(f"/v2/{NAME}/blobs/{digest(DATA)}").content == DATA
    assert multipart_uploads(s3_server, bucket) == []


def test_a_refused_chunk_drops_the_parts_it_sent(client: httpx.Client, s3_server: S3Server, bucket: str) -> None:
    """A chunk longer than its Content-Range is cut back; the part it completed must be resent from the file."""
    location = start(client)
    first = DATA[: PART - MiB]
    assert client.patch(location, content=first, headers={"Content-Range": f"0-{len(first) - 1}"}).status_code == 202
    wrong = random.Random(7).randbytes(2 * MiB)  # crosses the first part boundary, then is refused
    lying = {"Content-Range": f"{len(first)}-{len(first) + MiB - 1}"}
    assert client.patch(location, content=pieces(wrong), headers=lying).status_code == 400
    rest = {"Content-Range": f"{len(first)}-{len(DATA) - 1}"}
    assert client.patch(location, content=DATA[len(first) :], headers=rest).status_code == 202
    assert client.put(location, params={"digest": digest(DATA)}).status_code == 201
    assert client.get(f"/v2/{NAME}/blobs/{digest(DATA)}").content == DATA
    assert multipart_uploads(s3_server, bucket) == []


def test_an_upload_gone_from_the_store_falls_back_to_sending_the_file(
    client: httpx.Client, s3_server: S3Server, bucket: str
) -> None:
    location = start(client)
    client.patch(location, content=pieces(DATA))
    [pending] = multipart_uploads(s3_server, bucket)
    s3_server.admin.abort_multipart_upload(Bucket=bucket, Key=pending["Key"], UploadId=pending["UploadId"])
    assert client.put(location, params={"digest": digest(DATA)}).status_code == 201
    assert client.get(f"/v2/{NAME}/blobs/{digest(DATA)}").content == DATA
    assert not any("_uploads" in key for key in keys(s3_server, bucket))


def test_the_purge_aborts_abandoned_parts(settings: Settings, s3_server: S3Server, bucket: str) -> None:
    registry = build_registry(settings)
    upload = registry.uploads.create(NAME)

    async def body() -> AsyncIterator[bytes]:
        for piece in pieces(DATA):
            yield piece

    asyncio.run(registry.uploads.receive(upload, Body(body())))
    assert len(multipart_uploads(s3_server, bucket)) == 1
    assert registry.uploads.purge_older_than(-1) == 1
    assert multipart_uploads(s3_server, bucket) == []


def test_a_blob_asked_for_first_is_assembled_under_its_own_key(
    client: httpx.Client, s3_server: S3Server, bucket: str
) -> None:
    """HEAD (404) then upload, as docker and skopeo do: no staging key, no copy."""
    blob_key = f"v2/{NAME}/blobs/{digest(DATA)}"
    assert client.head(f"/v2/{NAME}/blobs/{digest(DATA)}").status_code == 404
    location = start(client)
    client.patch(location, content=pieces(DATA))
    assert [upload["Key"] for upload in multipart_uploads(s3_server, bucket)] == [blob_key]
    assert blob_key not in keys(s3_server, bucket)  # invisible until the digest is verified

    assert client.put(location, params={"digest": digest(DATA)}).status_code == 201
    assert client.get(f"/v2/{NAME}/blobs/{digest(DATA)}").content == DATA
    assert s3_server.admin.head_object(Bucket=bucket, Key=blob_key)["ContentType"] == "application/octet-stream"
    assert multipart_uploads(s3_server, bucket) == []


def test_a_wrong_guess_is_never_completed(client: httpx.Client, s3_server: S3Server, bucket: str) -> None:
    other = digest(b"a blob the client asked about but did not send")
    assert client.head(f"/v2/{NAME}/blobs/{other}").status_code == 404
    location = start(client)
    client.patch(location, content=pieces(DATA))
    assert [upload["Key"] for upload in multipart_uploads(s3_server, bucket)] == [f"v2/{NAME}/blobs/{other}"]

    assert client.put(location, params={"digest": other}).status_code == 400  # the bytes are not `other`
    assert f"v2/{NAME}/blobs/{other}" not in keys(s3_server, bucket)
    assert multipart_uploads(s3_server, bucket) == []

    assert client.head(f"/v2/{NAME}/blobs/{other}").status_code == 404
    location = start(client)
    client.patch(location, content=pieces(DATA))
    assert client.put(location, params={"digest": digest(DATA)}).status_code == 201  # sent whole instead
    assert client.get(f"/v2/{NAME}/blobs/{digest(DATA)}").content == DATA
    assert f"v2/{NAME}/blobs/{other}" not in keys(s3_server, bucket)
    assert multipart_uploads(s3_server, bucket) == []


def test_a_guessed_upload_of_a_blob_meanwhile_pushed_leaves_that_blob_alone(
    client: httpx.Client, s3_server: S3Server, bucket: str
) -> None:
    assert client.head(f"/v2/{NAME}/blobs/{digest(DATA)}").status_code == 404
    guessed = start(client)
    client.patch(guessed, content=pieces(DATA))
    other = start(client)
    client.patch(other, content=pieces(DATA))
    assert client.put(other, params={"digest": digest(DATA)}).status_code == 201

    assert client.put(guessed, params={"digest": digest(DATA)}).status_code == 201
    assert client.get(f"/v2/{NAME}/blobs/{digest(DATA)}").content == DATA
    assert multipart_uploads(s3_server, bucket) == []
