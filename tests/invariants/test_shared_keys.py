"""Every kind of shared key under concurrent writers through two replicas (one staging directory, a balancer
that sends each request to the next replica), on each kind of store; then the invariant over the whole store.

- blob: its bytes hash to its key, and replicas publish it once;
- upload session: whatever races on it, what is published is what was verified;
- tag and tags list: every tag pushed is in `tags/list` right after its push;
- catalog: every repository pushed is in `_catalog` right after its push;
- immutable tag: of many pushes, one lands; it never points elsewhere.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import httpx
import pytest

from tests.invariants.conftest import Cluster
from tests.support.invariants import assert_every_blob_hashes_to_its_key, assert_every_tag_pulls, assert_tags_listed
from tests.support.pushing import OCI_MANIFEST, digest, error_code, image_manifest, push_blob

T = TypeVar("T")
WRITERS = 8
CONFIG = b'{"architecture":"amd64","os":"linux"}'


def at_once(count: int, job: Callable[[int], T]) -> list[T]:
    """`job(0..count-1)`, each in its own thread, released together."""
    start = threading.Barrier(count)

    def run(index: int) -> T:
        start.wait()
        return job(index)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def client(cluster: Cluster) -> httpx.Client:
    return httpx.Client(base_url=cluster.url, timeout=60)


def put_manifest(http: httpx.Client, name: str, reference: str, body: bytes) -> httpx.Response:
    return http.put(f"/v2/{name}/manifests/{reference}", content=body, headers={"Content-Type": OCI_MANIFEST})


def test_a_blob_pushed_by_many_at_once_is_written_once_and_hashes_to_its_key(cluster: Cluster) -> None:
    layer = random.Random(1).randbytes(200_000)

    def push(_: int) -> int:
        with client(cluster) as http:
            assert push_blob(http, "inv/blob", layer) == digest(layer)
            return http.head(f"/v2/inv/blob/blobs/{digest(layer)}").status_code

    assert at_once(WRITERS, push) == [200] * WRITERS  # each client's HEAD after its 201, on either replica
    assert assert_every_blob_hashes_to_its_key(cluster.storage()) == 1
    if cluster.proxy is not None:
        assert cluster.proxy.count("PUT", path=f"/blobs/{digest(layer)}$") <= WRITERS  # never more than its sessions


@pytest.mark.parametrize("cluster", [{"publish_in_background": True}, {}], indirect=True, ids=["behind", "before"])
def test_a_blob_one_replica_just_wrote_is_there_for_the_other_replicas_head(cluster: Cluster) -> None:
    """docker HEADs each blob after its 201, maybe through the other replica, whose listing is seconds old."""
    layer = random.Random(3).randbytes(50_000)
    first, second = (httpx.Client(base_url=url, timeout=30) for url in cluster.replicas)
    with first, second:
        assert second.head(f"/v2/inv/head/blobs/{digest(layer)}").status_code == 404  # listed: absent
        push_blob(first, "inv/head", layer)
        assert second.head(f"/v2/inv/head/blobs/{digest(layer)}").status_code == 200
        assert first.head(f"/v2/inv/head/blobs/{digest(layer)}").status_code == 200


def test_chunks_and_final_puts_racing_on_one_session_publish_only_verified_bytes(cluster: Cluster) -> None:
    """A hostile client fires chunks, final PUTs and a cancel at one session through both replicas at once."""
    data = random.Random(2).randbytes(100_000)
    with client(cluster) as http:
        location = http.post("/v2/inv/session/blobs/uploads/").headers["Location"]
        assert http.patch(location, content=data).status_code == 202

    def race(index: int) -> int:
        with client(cluster) as http:
            if index % 3 == 0:
                return http.put(location, params={"digest": digest(data)}).status_code
            if index % 3 == 1:
                return http.patch(location, content=f"extra {index}".encode() * 100).status_code
            return http.put(location, params={"digest": digest(data + b"x")}, content=b"x").status_code

    answers = at_once(9, race)
    assert set(answers) <= {201, 202, 400, 404, 416}, answers
    storage = cluster.storage()
    assert_every_blob_hashes_to_its_key(storage)
    published = storage.stat(f"v2/inv/session/blobs/{digest(data)}")
    assert published is None or published.size == len(data)


def test_every_tag_pushed_at_once_is_listed_right_after_its_push(cluster: Cluster, store_kind: str) -> None:
    with client(cluster) as http:
        for blob in (CONFIG, b"shared layer" * 100):
            push_blob(http, "inv/tagged", blob)
    manifest = image_manifest(CONFIG, [b"shared layer" * 100])
    late: list[str] = []

    def push(index: int) -> None:
        tag = f"t{index}"
        with client(cluster) as http:
            assert put_manifest(http, "inv/tagged", tag, manifest).status_code == 201
            listed = http.get("/v2/inv/tagged/tags/list").json()["tags"]  # the other replica, as a client's next look
            if tag not in listed:
                late.append(tag)

    at_once(WRITERS, push)
    if store_kind != "s3-storj-rules":  # without If-Match a stale writer can hide a tag for a round trip
        assert late == []
    storage = cluster.storage()
    assert assert_tags_listed(storage, "inv/tagged") == sorted(f"t{i}" for i in range(WRITERS))
    assert_every_tag_pulls(storage)


def test_every_repository_pushed_at_once_is_in_the_catalog_right_after_its_push(
    cluster: Cluster, store_kind: str
) -> None:
    manifest = image_manifest(CONFIG, [])
    late: list[str] = []

    def push(index: int) -> None:
        name = f"inv/repo-{index}"
        with client(cluster) as http:
            push_blob(http, name, CONFIG)
            assert put_manifest(http, name, "v1", manifest).status_code == 201
            if name not in http.get("/v2/_catalog").json()["repositories"]:
                late.append(name)

    at_once(WRITERS, push)
    if store_kind != "s3-storj-rules":
        assert late == []
    found = cluster.storage().read_small("v2/_catalog")
    assert found is not None
    assert {f"inv/repo-{i}" for i in range(WRITERS)} <= set(json.loads(found[0])["repositories"])


def test_one_tag_pushed_at_once_ends_as_one_push_with_its_own_media_type(cluster: Cluster) -> None:
    """The same tag, different manifests and media types: the tag holds one push's bytes with that push's type."""
    media_types = [OCI_MANIFEST, "application/vnd.docker.distribution.manifest.v2+json"]
    with client(cluster) as http:
        push_blob(http, "inv/same", CONFIG)
    bodies = [image_manifest(CONFIG, [], media_type=media_types[i % 2], annotations={"n": str(i)}) for i in range(8)]

    def push(index: int) -> int:
        with client(cluster) as http:
            headers = {"Content-Type": media_types[index % 2]}
            return http.put("/v2/inv/same/manifests/latest", content=bodies[index], headers=headers).status_code

    assert at_once(WRITERS, push) == [201] * WRITERS
    found = cluster.storage().read_small("v2/inv/same/manifests/latest")
    assert found is not None and found[0] in bodies
    assert found[1].content_type == media_types[bodies.index(found[0]) % 2]


@pytest.mark.parametrize("cluster", [{"immutable": True}], indirect=True)
def test_an_immutable_tag_pushed_at_once_lands_once_and_never_moves(cluster: Cluster) -> None:
    """Eight pushes of different manifests to one immutable tag: one 201, seven refusals (DENIED)."""
    with client(cluster) as http:
        push_blob(http, "release/app", CONFIG)
    bodies = [image_manifest(CONFIG, [], annotations={"n": str(i)}) for i in range(WRITERS)]

    def push(index: int) -> httpx.Response:
        with client(cluster) as http:
            return put_manifest(http, "release/app", "v1.0", bodies[index])

    answers = at_once(WRITERS, push)
    landed = [i for i, answer in enumerate(answers) if answer.status_code == 201]
    assert len(landed) == 1, [answer.status_code for answer in answers]
    assert all(error_code(a) == "DENIED" for a in answers if a.status_code != 201)
    found = cluster.storage().read_small("v2/release/app/manifests/v1.0")
    assert found is not None and found[0] == bodies[landed[0]]
    with client(cluster) as http:  # the winner's retry is fine; any other push is refused, on either replica
        assert put_manifest(http, "release/app", "v1.0", bodies[landed[0]]).status_code == 201
        assert put_manifest(http, "release/app", "v1.0", bodies[(landed[0] + 1) % WRITERS]).status_code == 403
