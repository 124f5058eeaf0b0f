"""The upload API over HTTP, on both backends: every way a client sends a blob, and every way it can go wrong."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import httpx

from tests.conftest import BucketView
from tests.support.pushing import digest, push_blob

NAME = "team/app"
DATA = bytes(range(256)) * 400  # 100 KiB


def start(client: httpx.Client, name: str = NAME) -> str:
    response = client.post(f"/v2/{name}/blobs/uploads/")
    assert response.status_code == 202
    assert response.headers["Docker-Upload-UUID"]
    assert response.headers["Range"] == "0-0"
    return response.headers["Location"]


def test_post_opens_a_session_with_a_location(client: httpx.Client) -> None:
    location = start(client)
    assert location.startswith(f"/v2/{NAME}/blobs/uploads/")


def test_monolithic_put_commits_the_blob(client: httpx.Client, bucket_view: BucketView) -> None:
    pushed = push_blob(client, NAME, DATA)
    assert bucket_view.objects()[f"v2/{NAME}/blobs/{pushed}"] == (len(DATA), "application/octet-stream")
    head = client.head(f"/v2/{NAME}/blobs/{pushed}")
    assert head.status_code == 200
    assert head.headers["Content-Length"] == str(len(DATA))
    assert head.headers["Docker-Content-Digest"] == pushed
    assert client.get(f"/v2/{NAME}/blobs/{pushed}").content == DATA


def test_single_request_post_with_digest_returns_201(client: httpx.Client) -> None:
    response = client.post(f"/v2/{NAME}/blobs/uploads/", params={"digest": digest(DATA)}, content=DATA)
    assert response.status_code == 201
    assert response.headers["Location"] == f"/v2/{NAME}/blobs/{digest(DATA)}"
    assert response.headers["Docker-Content-Digest"] == digest(DATA)
    assert client.get(response.headers["Location"]).content == DATA


def chunked_body(data: bytes, size: int = 7000) -> Iterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]


def test_streamed_patch_with_chunked_encoding_then_empty_put(client: httpx.Client) -> None:
    location = start(client)
    patched = client.patch(location, content=chunked_body(DATA))  # generator => Transfer-Encoding: chunked
    assert patched.status_code == 202
    assert patched.headers["Range"] == f"0-{len(DATA) - 1}"
    finished = client.put(patched.headers["Location"], params={"digest": digest(DATA)})
    assert finished.status_code == 201
    assert client.get(f"/v2/{NAME}/blobs/{digest(DATA)}").content == DATA


def test_chunks_with_content_range_in_order(client: httpx.Client) -> None:
    location = start(client)
    first, second = DATA[:40000], DATA[40000:]
    response = client.patch(location, content=first, headers={"Content-Range": f"0-{len(first) - 1}"})
    assert response.status_code == 202 and response.headers["Range"] == f"0-{len(first) - 1}"
    response = client.patch(location, content=second, headers={"Content-Range": f"{len(first)}-{len(DATA) - 1}"})
    assert response.status_code == 202 and response.headers["Range"] == f"0-{len(DATA) - 1}"
    assert client.put(location, params={"digest": digest(DATA)}).status_code == 201


def test_out_of_order_and_repeated_chunks_are_416_and_the_upload_stays_usable(client: httpx.Client) -> None:
    location = start(client)
    first = DATA[:1000]
    assert client.patch(location, content=first, headers={"Content-Range": "0-999"}).status_code == 202
    skipped = client.patch(location, content=DATA[2000:3000], headers={"Content-Range": "2000-2999"})
    assert skipped.status_code == 416
    assert skipped.json()["errors"][0]["code"] == "BLOB_UPLOAD_INVALID"
    repeated = client.patch(location, content=first, headers={"Content-Range": "0-999"})
    assert repeated.status_code == 416
    status = client.get(location)
    assert status.status_code == 204 and status.headers["Range"] == "0-999"
    rest = DATA[1000:]
    assert client.patch(location, content=rest, headers={"Content-Range": f"1000-{len(DATA) - 1}"}).status_code == 202
    assert client.put(location, params={"digest": digest(DATA)}).status_code == 201


def test_final_put_body_that_does_not_continue_the_upload_is_416(client: httpx.Client) -> None:
    location = start(client)
    client.patch(location, content=DATA[:100], headers={"Content-Range": "0-99"})
    bad = client.put(
        location, params={"digest": digest(DATA)}, content=DATA[50:], headers={"Content-Range": f"50-{len(DATA) - 1}"}
    )
    assert bad.status_code == 416
    good = client.put(
        location, params={"digest": digest(DATA)}, content=DATA[100:], headers={"Content-Range": f"100-{len(DATA) - 1}"}
    )
    assert good.status_code == 201


def test_chunk_whose_length_disagrees_with_content_range_is_refused(client: httpx.Client) -> None:
    location = start(client)
    response = client.patch(location, content=DATA[:10], headers={"Content-Range": "0-99"})
    assert response.status_code == 400
    assert client.get(location).headers["Range"] == "0-0"


def test_upload_status_reports_bytes_received(client: httpx.Client) -> None:
    location = start(client)
    client.patch(location, content=DATA[:12345])
    status = client.get(location)
    assert status.status_code == 204
    assert status.headers["Range"] == "0-12344"
    assert status.headers["Location"] == location


def test_cancel_deletes_the_session(client: httpx.Client) -> None:
    location = start(client)
    client.patch(location, content=DATA[:10])
    assert client.delete(location).status_code == 204
    gone = client.get(location)
    assert gone.status_code == 404
    assert gone.json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"


def test_wrong_digest_is_400_and_the_bucket_is_untouched(client: httpx.Client, bucket_view: BucketView) -> None:
    before = bucket_view.keys()
    location = start(client)
    client.patch(location, content=DATA)
    wrong = digest(b"something else")
    response = client.put(location, params={"digest": wrong})
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "DIGEST_INVALID"
    assert bucket_view.keys() == before
    assert client.get(location).status_code == 404  # staged bytes discarded


def test_missing_or_malformed_digest_on_put_is_digest_invalid(client: httpx.Client, bucket_view: BucketView) -> None:
    before = bucket_view.keys()
    location = start(client)
    client.patch(location, content=DATA)
    for params in ({}, {"digest": "sha256:xyz"}, {"digest": "../../etc"}):
        response = client.put(location, params=params)
        assert response.status_code == 400
        assert response.json()["errors"][0]["code"] == "DIGEST_INVALID"
    assert bucket_view.keys() == before


def test_sha512_digests_are_verified(client: httpx.Client) -> None:
    sha512 = "sha512:" + hashlib.sha512(DATA).hexdigest()
    response = client.post(f"/v2/{NAME}/blobs/uploads/", params={"digest": sha512}, content=DATA)
    assert response.status_code == 201
    assert client.get(f"/v2/{NAME}/blobs/{sha512}").content == DATA


def test_empty_blob_pushes_and_pulls(client: httpx.Client) -> None:
    pushed = push_blob(client, NAME, b"")
    head = client.head(f"/v2/{NAME}/blobs/{pushed}")
    assert head.status_code == 200 and head.headers["Content-Length"] == "0"


def test_unknown_upload_ids_are_404(client: httpx.Client) -> None:
    for upload_id in ("0" * 32, "not-a-uuid", "%2E%2E"):
        response = client.patch(f"/v2/{NAME}/blobs/uploads/{upload_id}", content=b"x")
        assert response.status_code == 404
        assert response.json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"
    traversal = client.patch(f"/v2/{NAME}/blobs/uploads/..%2F..%2Fetc", content=b"x")
    assert traversal.status_code == 404


def test_a_session_belongs_to_its_repository(client: httpx.Client) -> None:
    location = start(client)
    other = location.replace(f"/v2/{NAME}/", "/v2/other/")
    assert client.patch(other, content=b"x").status_code == 404


def test_mount_copies_from_another_repository(client: httpx.Client, bucket_view: BucketView) -> None:
    pushed = push_blob(client, "base/image", DATA)
    response = client.post(f"/v2/{NAME}/blobs/uploads/", params={"mount": pushed, "from": "base/image"})
    assert response.status_code == 201
    assert response.headers["Location"] == f"/v2/{NAME}/blobs/{pushed}"
    assert response.headers["Docker-Content-Digest"] == pushed
    assert bucket_view.objects()[f"v2/{NAME}/blobs/{pushed}"] == (len(DATA), "application/octet-stream")


def test_mount_of_a_blob_the_source_lacks_opens_a_session(client: httpx.Client) -> None:
    response = client.post(f"/v2/{NAME}/blobs/uploads/", params={"mount": digest(b"nope"), "from": "base/image"})
    assert response.status_code == 202
    assert response.headers["Location"].startswith(f"/v2/{NAME}/blobs/uploads/")


def test_invalid_repository_name_is_denied_saying_why(client: httpx.Client, bucket_view: BucketView) -> None:
    before = bucket_view.keys()
    for name, why in (("UPPER/case", "lowercase"), ("a_/b", "components of"), ("x" * 300, "at most 255")):
        response = client.post(f"/v2/{name}/blobs/uploads/", params={"digest": digest(DATA)}, content=DATA)
        assert response.status_code == 403, name
        (error,) = response.json()["errors"]
        assert error["code"] == "DENIED" and why in error["message"], (name, error)
    empty_component = client.post("/v2/a//b/blobs/uploads/", params={"digest": digest(DATA)}, content=DATA)
    assert empty_component.status_code in (403, 404)  # the router may not match it at all
    assert bucket_view.keys() == before
