"""Any replica takes any request (app/cluster/): three replicas on one store, each with its own staging directory,
asked directly (no balancer), so each test says exactly which replica a request reaches."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.cluster.members import member_id
from app.settings import Settings
from tests.support.cluster import Cluster, staging_of

BLOB = b"a layer, in three chunks: " + bytes(range(256)) * 40
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    def settings_for(index: int, peering: dict[str, object]) -> Settings:
        return Settings(
            storage="filesystem",
            data_dir=tmp_path / "data",
            staging_dir=staging_of(tmp_path, index),
            publish_in_background=True,
            **peering,  # type: ignore[arg-type]
        )

    with Cluster(3, settings_for) as started:
        started.start_all()
        yield started


def staged_sessions(tmp_path: Path, index: int) -> list[str]:
    return [entry.name for entry in staging_of(tmp_path, index).iterdir() if len(entry.name) == 32]


def test_an_upload_goes_on_through_every_replica_and_its_blob_is_there_for_each(
    cluster: Cluster, tmp_path: Path
) -> None:
    first, second, third = cluster.urls
    started = httpx.post(f"{first}/v2/team/app/blobs/uploads/")
    assert started.status_code == 202
    location = started.headers["location"]
    upload_id = location.rsplit("/", 1)[1]
    holder = next(index for index, url in enumerate(cluster.urls) if upload_id.startswith(member_id(url)))
    assert staged_sessions(tmp_path, holder) == [upload_id]  # held by one replica, whichever was asked
    chunks = [BLOB[:1000], BLOB[1000:5000], BLOB[5000:]]
    offset = 0
    for url, chunk in zip([second, third], chunks[:2], strict=True):
        headers = {"Content-Range": f"{offset}-{offset + len(chunk) - 1}", "Content-Type": "application/octet-stream"}
        answer = httpx.patch(url + location, content=chunk, headers=headers)
        assert answer.status_code == 202, answer.text
        assert answer.headers["range"] == f"0-{offset + len(chunk) - 1}"
        offset += len(chunk)
    finished = httpx.put(f"{first}{location}?digest={DIGEST}", content=chunks[2])
    assert finished.status_code == 201, finished.text
    for url in cluster.urls:  # right after the 201, whichever replica is asked
        assert httpx.head(f"{url}/v2/team/app/blobs/{DIGEST}").status_code == 200
    assert (tmp_path / "data" / "v2/team/app/blobs" / DIGEST).read_bytes() == BLOB


def test_a_request_posing_as_a_peer_with_a_wrong_secret_is_refused_and_writes_nothing(
    cluster: Cluster, tmp_path: Path
) -> None:
    answer = httpx.post(f"{cluster.urls[0]}/v2/team/app/blobs/uploads/", headers={"X-Registry-Peer": "guess"})
    assert answer.status_code == 403
    assert answer.json()["errors"][0]["code"] == "DENIED"
    assert all(staged_sessions(tmp_path, index) == [] for index in range(3))


def test_peer_only_paths_are_not_for_clients(cluster: Cluster) -> None:
    body = {"name": "team/app", "digests": [DIGEST]}
    assert httpx.post(f"{cluster.urls[0]}/_peer/settle", json=body).status_code == 404


def test_a_stopped_replicas_sessions_are_unknown_and_its_repositories_go_on_elsewhere(
    cluster: Cluster, tmp_path: Path
) -> None:
    location = httpx.post(f"{cluster.urls[0]}/v2/team/app/blobs/uploads/").headers["location"]
    holder = next(i for i, url in enumerate(cluster.urls) if location.rsplit("/", 1)[1].startswith(member_id(url)))
    cluster.stop(holder)  # at once: no drain, as a crash looks to the others
    survivor = next(replica.url for replica in cluster.replicas if replica.running)
    lost = httpx.patch(survivor + location, content=b"more")
    assert lost.status_code == 404
    assert lost.json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"
    again = httpx.post(f"{survivor}/v2/team/app/blobs/uploads/?digest={DIGEST}", content=BLOB)
    assert again.status_code == 201, again.text
    assert httpx.head(f"{survivor}/v2/team/app/blobs/{DIGEST}").status_code == 200
