"""Faults of the S3 store (Storj's gateway) during pushes, injected by a proxy in front of a real SeaweedFS.

Throttled writes are retried inside the service; a fault that outlasts the retries reaches the client as 503 with
`Retry-After`, keeps the staged upload so that the client's retry succeeds, and leaves no partial object and no
multipart upload behind. A manifest write that fails never leaves a tag pointing at something missing.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.faults.conftest import PART_SIZE, faulty_settings
from tests.support import fault_proxy
from tests.support.fault_proxy import FaultProxy
from tests.support.pushing import OCI_MANIFEST, digest, image_manifest, push_blob, push_manifest
from tests.support.registry_server import running_registry
from tests.support.seaweed import S3Server

NAME = "faults/app"
LAYER = random.Random(5).randbytes(PART_SIZE + 300_000)  # two parts
CONFIG = b'{"architecture":"amd64","os":"linux"}'
IMPATIENT = {"s3_max_attempts": 2}  # a fault outlasts the retries quickly


@contextmanager
def registry_through(proxy: FaultProxy, s3_server: S3Server, bucket: str, tmp_path: Path, **extra: Any):
    settings = faulty_settings(s3_server, bucket, tmp_path, proxy, **extra)
    with running_registry(settings) as url, httpx.Client(base_url=url, timeout=120) as client:
        yield client


@pytest.fixture
def patient(faults: FaultProxy, s3_server: S3Server, bucket: str, tmp_path: Path) -> Iterator[httpx.Client]:
    with registry_through(faults, s3_server, bucket, tmp_path) as client:
        yield client


@pytest.fixture
def impatient(faults: FaultProxy, s3_server: S3Server, bucket: str, tmp_path: Path) -> Iterator[httpx.Client]:
    with registry_through(faults, s3_server, bucket, tmp_path, **IMPATIENT) as client:
        yield client


def exists(s3_server: S3Server, bucket: str, key: str) -> bool:
    """Seen directly in SeaweedFS, not through the proxy."""
    listed = s3_server.admin.list_objects_v2(Bucket=bucket, Prefix=key).get("Contents", [])
    return any(item["Key"] == key for item in listed)


def multipart_uploads(s3_server: S3Server, bucket: str) -> list[dict[str, Any]]:
    return s3_server.admin.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) > 0
    if response.request.method != "HEAD":
        assert response.json()["errors"][0]["code"] == "UNAVAILABLE"


def staged(client: httpx.Client, data: bytes) -> str:
    """An upload session holding `data` (POST, one PATCH); returns its location."""
    location = client.post(f"/v2/{NAME}/blobs/uploads/").headers["Location"]
    patched = client.patch(location, content=data)
    assert patched.status_code == 202, patched.text
    return patched.headers["Location"]


def test_throttled_writes_are_retried_inside_the_service(patient: httpx.Client, faults: FaultProxy) -> None:
    faults.add(fault_proxy.slow_down(method="PUT", query=r"partNumber=1(&|$)", times=2))
    faults.add(fault_proxy.slow_down(method="PUT", path=f"/blobs/{digest(CONFIG)}$", times=2))
    faults.add(fault_proxy.slow_down(method="PUT", path=r"/manifests/v1$", times=2))
    finished = patient.put(staged(patient, LAYER), params={"digest": digest(LAYER)})
    assert finished.status_code == 201, finished.text
    push_blob(patient, NAME, CONFIG)
    manifest = image_manifest(CONFIG, [LAYER])
    assert push_manifest(patient, NAME, "v1", manifest, OCI_MANIFEST).status_code == 201

    assert faults.count("PUT", query=r"partNumber=1(&|$)") == 3
    assert faults.count("PUT", path=f"/blobs/{digest(CONFIG)}$") == 3
    assert faults.count("PUT", path=r"/manifests/v1$") == 3
    assert patient.get(f"/v2/{NAME}/manifests/v1").content == manifest
    assert patient.get(f"/v2/{NAME}/blobs/{digest(LAYER)}").content == LAYER


FAULTS: dict[str, Callable[..., fault_proxy.Fault]] = {
    "503": fault_proxy.unavailable,
    "429-slowdown": fault_proxy.slow_down,
    "connection-dropped-mid-part": fault_proxy.drop_mid_body,
    "connection-refused": fault_proxy.drop,
}


@pytest.mark.parametrize("make_fault", FAULTS.values(), ids=FAULTS.keys())
def test_a_failing_part_keeps_the_upload_for_the_clients_retry(
    make_fault: Callable[..., fault_proxy.Fault],
    impatient: httpx.Client,
    faults: FaultProxy,
    s3_server: S3Server,
    bucket: str,
) -> None:
    key = f"v2/{NAME}/blobs/{digest(LAYER)}"
    location = staged(impatient, LAYER)
    faults.add(make_fault(method="PUT", query=r"partNumber=2(&|$)"))

    failed = impatient.put(location, params={"digest": digest(LAYER)})
    assert_unavailable(failed)
    assert not exists(s3_server, bucket, key)
    status = impatient.get(location)
    assert status.status_code == 204
    assert status.headers["Range"] == f"0-{len(LAYER) - 1}"

    faults.clear()
    retried = impatient.put(location, params={"digest": digest(LAYER)})
    assert retried.status_code == 201, retried.text
    assert impatient.get(f"/v2/{NAME}/blobs/{digest(LAYER)}").content == LAYER
    assert multipart_uploads(s3_server, bucket) == []


def test_an_upload_given_up_after_a_fault_leaves_nothing_behind(
    impatient: httpx.Client, faults: FaultProxy, s3_server: S3Server, bucket: str
) -> None:
    location = staged(impatient, LAYER)
    faults.add(fault_proxy.unavailable(method="PUT", query=r"partNumber=2(&|$)"))
    assert_unavailable(impatient.put(location, params={"digest": digest(LAYER)}))
    assert impatient.delete(location).status_code == 204
    assert multipart_uploads(s3_server, bucket) == []
    assert s3_server.admin.list_objects_v2(Bucket=bucket, Prefix=f"v2/{NAME}/blobs/").get("Contents", []) == []


def test_a_final_put_with_a_body_can_be_retried_as_it_was(impatient: httpx.Client, faults: FaultProxy) -> None:
    """oras and containerd send the whole blob with the final PUT: its retry resends the same body."""
    location = impatient.post(f"/v2/{NAME}/blobs/uploads/").headers["Location"]
    faults.add(fault_proxy.unavailable(method="PUT", path=f"/blobs/{digest(CONFIG)}$"))
    assert_unavailable(impatient.put(location, params={"digest": digest(CONFIG)}, content=CONFIG))
    faults.clear()
    retried = impatient.put(location, params={"digest": digest(CONFIG)}, content=CONFIG)
    assert retried.status_code == 201, retried.text
    assert impatient.get(f"/v2/{NAME}/blobs/{digest(CONFIG)}").content == CONFIG


def test_a_failed_single_request_upload_leaves_no_session(
    impatient: httpx.Client, faults: FaultProxy, tmp_path: Path
) -> None:
    faults.add(fault_proxy.unavailable(method="PUT", path=f"/blobs/{digest(CONFIG)}$"))
    single = {"digest": digest(CONFIG)}
    assert_unavailable(impatient.post(f"/v2/{NAME}/blobs/uploads/", params=single, content=CONFIG))
    assert list((tmp_path / "staging").iterdir()) == []
    faults.clear()
    assert impatient.post(f"/v2/{NAME}/blobs/uploads/", params=single, content=CONFIG).status_code == 201


def test_a_manifest_write_that_fails_never_leaves_a_tag_to_something_missing(
    impatient: httpx.Client, faults: FaultProxy, s3_server: S3Server, bucket: str
) -> None:
    push_blob(impatient, NAME, CONFIG)
    push_blob(impatient, NAME, b"layer")
    manifest = image_manifest(CONFIG, [b"layer"])
    digest_key, tag_key = f"v2/{NAME}/manifests/{digest(manifest)}", f"v2/{NAME}/manifests/v1"

    faults.add(fault_proxy.unavailable(method="PUT", path=r"/manifests/"))
    assert_unavailable(push_manifest(impatient, NAME, "v1", manifest, OCI_MANIFEST))
    assert not exists(s3_server, bucket, digest_key)
    assert not exists(s3_server, bucket, tag_key)

    faults.clear()  # now the service "crashes" between the manifest by digest and its tag
    faults.add(fault_proxy.unavailable(method="PUT", path=r"/manifests/v1$"))
    assert_unavailable(push_manifest(impatient, NAME, "v1", manifest, OCI_MANIFEST))
    assert exists(s3_server, bucket, digest_key)
    assert not exists(s3_server, bucket, tag_key)
    assert impatient.get(f"/v2/{NAME}/manifests/{digest(manifest)}").content == manifest
    assert impatient.get(f"/v2/{NAME}/manifests/v1").status_code == 404

    faults.clear()
    assert push_manifest(impatient, NAME, "v1", manifest, OCI_MANIFEST).status_code == 201
    assert impatient.get(f"/v2/{NAME}/manifests/v1").content == manifest
    assert impatient.get(f"/v2/{NAME}/tags/list").json()["tags"] == ["v1"]


def test_an_unreachable_store_is_503_everywhere_never_500(
    faults: FaultProxy, s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    faults.add(fault_proxy.drop())
    some = digest(b"anything")
    with registry_through(faults, s3_server, bucket, tmp_path, s3_max_attempts=1) as client:  # no retries: quick
        assert client.get("/v2/").status_code == 200
        for response in (
            client.head(f"/v2/{NAME}/blobs/{some}"),
            client.get(f"/v2/{NAME}/blobs/{some}"),
            client.get(f"/v2/{NAME}/manifests/v1"),
            client.get(f"/v2/{NAME}/tags/list"),
            client.get("/v2/_catalog"),
            push_manifest(client, NAME, "v1", image_manifest(CONFIG, []), OCI_MANIFEST),
        ):
            assert_unavailable(response)
