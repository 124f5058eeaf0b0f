"""Many pushes at once through two replicas over one bucket: every push succeeds and the indexes converge.

Tags of one repository pushed at the same moment all end up in `tags/list`, new repositories pushed at the same
moment all end up in `_catalog`, referrers of one subject all end up in its index, and the same tag pushed by
several clients at once ends as one of them (the last writer wins) without an error.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from app.storage import open_storage
from app.tools.fsck import fsck
from tests.conftest import s3_settings
from tests.faults.conftest import faulty_settings
from tests.support.fault_proxy import FaultProxy, throttle_writes_per_key
from tests.support.pushing import OCI_MANIFEST, descriptor, digest, image_manifest, push_blob, push_manifest
from tests.support.registry_server import running_registry
from tests.support.seaweed import S3Server

SHARED_LAYER = b"shared base layer " * 5000
pytestmark = pytest.mark.usefixtures("fsck_clean")
ARTIFACT = "application/vnd.example.signature"
T = TypeVar("T")


@pytest.fixture(scope="module")
def shared_bucket(s3_server: S3Server) -> str:
    return s3_server.new_bucket("conc")


@pytest.fixture(scope="module")
def replicas(s3_server: S3Server, shared_bucket: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """Two registries, each with its own staging dir and in-process locks, over one bucket."""
    first = s3_settings(s3_server, shared_bucket, tmp_path_factory.mktemp("replica-a"))
    second = s3_settings(s3_server, shared_bucket, tmp_path_factory.mktemp("replica-b"))
    with running_registry(first) as url_a, running_registry(second) as url_b:
        yield [url_a, url_b]


@pytest.fixture
def fsck_clean(s3_server: S3Server, shared_bucket: str, tmp_path: Path) -> Iterator[None]:
    """After the test, `storj-registry fsck` finds the bucket without a problem."""
    yield
    out = io.StringIO()
    report = fsck(open_storage(s3_settings(s3_server, shared_bucket, tmp_path)), out=out)
    assert out.getvalue() == ""
    assert report.left == 0


def all_at_once(jobs: list[Callable[[], T]]) -> list[T]:
    """Run every job in its own thread, released together."""
    start = threading.Barrier(len(jobs))

    def run(job: Callable[[], T]) -> T:
        start.wait()
        return job()

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        return list(pool.map(run, jobs))


def push(url: str, name: str, tag: str, seed: int) -> bytes:
    """An image with the shared layer, its own layer and config; returns its manifest."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    layers = [SHARED_LAYER, f"own layer {seed} ".encode() * 1000]
    with httpx.Client(base_url=url, timeout=120) as client:
        for blob in (config, *layers):
            push_blob(client, name, blob)
        manifest = image_manifest(config, layers)
        response = push_manifest(client, name, tag, manifest, OCI_MANIFEST)
        assert response.status_code == 201, response.text
    return manifest


def get_json(url: str, path: str) -> dict:
    response = httpx.get(f"{url}{path}", timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def test_twenty_tags_and_six_repositories_pushed_at_once(replicas: list[str]) -> None:
    tags = [f"t{i:02d}" for i in range(20)]
    solos = [f"conc/solo-{i}" for i in range(6)]
    jobs = [lambda i=i, tag=tag: push(replicas[i % 2], "conc/shared", tag, i) for i, tag in enumerate(tags)]
    jobs += [lambda i=i, name=name: push(replicas[i % 2], name, "v1", 100 + i) for i, name in enumerate(solos)]
    all_at_once(jobs)

    for url in replicas:
        assert get_json(url, "/v2/conc/shared/tags/list")["tags"] == tags
        assert set(get_json(url, "/v2/_catalog")["repositories"]) >= {"conc/shared", *solos}


def test_the_same_tag_pushed_at_once_ends_as_one_of_them(replicas: list[str]) -> None:
    manifests = all_at_once([lambda i=i: push(replicas[i % 2], "conc/same", "latest", 200 + i) for i in range(8)])
    final = httpx.get(f"{replicas[0]}/v2/conc/same/manifests/latest", timeout=30).content
    assert final in manifests
    for manifest in manifests:
        assert httpx.get(f"{replicas[1]}/v2/conc/same/manifests/{digest(manifest)}", timeout=30).content == manifest
    assert get_json(replicas[1], "/v2/conc/same/tags/list")["tags"] == ["latest"]


def push_referrer(url: str, name: str, subject: bytes, seed: int) -> str:
    empty = b"{}"
    with httpx.Client(base_url=url, timeout=60) as client:
        push_blob(client, name, empty)
        body = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": ARTIFACT,
                "config": descriptor("application/vnd.oci.empty.v1+json", empty),
                "layers": [descriptor("application/vnd.oci.empty.v1+json", empty)],
                "subject": descriptor(OCI_MANIFEST, subject),
                "annotations": {"seed": str(seed)},
            }
        ).encode()
        response = push_manifest(client, name, digest(body), body, OCI_MANIFEST)
        assert response.status_code == 201, response.text
    return digest(body)


def test_referrers_of_one_subject_pushed_at_once_are_all_indexed(replicas: list[str]) -> None:
    subject = push(replicas[0], "conc/signed", "v1", 300)
    referrers = all_at_once([lambda i=i: push_referrer(replicas[i % 2], "conc/signed", subject, i) for i in range(8)])
    for url in replicas:
        index = get_json(url, f"/v2/conc/signed/referrers/{digest(subject)}")
        assert sorted(entry["digest"] for entry in index["manifests"]) == sorted(referrers)


def test_pushes_at_once_under_storj_throttling(
    faults: FaultProxy, s3_server: S3Server, shared_bucket: str, tmp_path: Path
) -> None:
    """Storj takes about one write per second per key and answers 429 SlowDown beyond: the service retries."""
    throttle = faults.add(throttle_writes_per_key(0.3, method="PUT"))  # Storj's 1 s, shortened to keep the test short
    tags = [f"t{i}" for i in range(6)]
    with running_registry(faulty_settings(s3_server, shared_bucket, tmp_path, faults)) as url:
        all_at_once([lambda i=i, tag=tag: push(url, "conc/throttled", tag, 400 + i) for i, tag in enumerate(tags)])
        assert get_json(url, "/v2/conc/throttled/tags/list")["tags"] == tags
    assert throttle.hits > 0
