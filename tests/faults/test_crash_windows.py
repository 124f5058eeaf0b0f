"""`kill -9` inside each commit that touches two things, then a restart: nothing published ever changes, and what
the crash interrupted is finished by the client's retry.

The service runs as `tests.faults.crashing_serve`, which SIGKILLs itself at the named point: between publishing an
upload and discarding its session, between a manifest's digest key and its tag, between the tag and the tags list.
"""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

import httpx

from app.settings import MiB
from tests.faults.conftest import service
from tests.support.pushing import OCI_MANIFEST, digest, image_manifest, push_blob

NAME = "crash/app"
OTHER = "crash/other"
DATA = random.Random(4).randbytes(MiB)
CRASHING = "tests.faults.crashing_serve"


def crashed(client: httpx.Client, method: str, url: str, **kwargs: object) -> None:
    """Send a request the service dies in the middle of: no answer comes."""
    with contextlib.suppress(httpx.TransportError):
        response = client.request(method, url, **kwargs)  # type: ignore[arg-type]
        raise AssertionError(f"the service answered {response.status_code} instead of dying")


def test_a_crash_between_publish_and_discard_leaves_the_published_blob_unchangeable(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "service.log"
    env = {**service_env, "CRASH_AT": "call:app.registry.staging:Staging.mark_published"}
    with service(env, log, CRASHING) as (process, url), httpx.Client(base_url=url, timeout=30) as client:
        location = client.post(f"/v2/{NAME}/blobs/uploads/").headers["Location"]
        assert client.patch(location, content=DATA).status_code == 202
        with contextlib.suppress(httpx.TransportError):  # 201 first: the blob is published behind the answer
            client.put(location, params={"digest": digest(DATA)})
        assert process.wait(timeout=10) < 0  # killed by its signal, between publishing and discarding

    with service(service_env, log) as (_, url), httpx.Client(base_url=url, timeout=30) as client:
        assert client.get(f"/v2/{NAME}/blobs/{digest(DATA)}").content == DATA
        mounted = client.post(f"/v2/{OTHER}/blobs/uploads/", params={"mount": digest(DATA), "from": NAME})
        assert mounted.status_code == 201
        # the session survived the crash; whatever it is sent now, the published blob stays as it was
        status = client.get(location)
        if status.status_code == 204:
            more = client.patch(location, content=b"appended", headers={"Content-Range": f"{MiB}-{MiB + 7}"})
            assert more.status_code == 202, more.text
        for name in (NAME, OTHER):
            blob = client.get(f"/v2/{name}/blobs/{digest(DATA)}")
            assert blob.content == DATA and blob.headers["Content-Length"] == str(len(DATA))


def manifest_of(client: httpx.Client) -> bytes:
    config = b'{"architecture":"amd64","os":"linux"}'
    for blob in (config, DATA):
        push_blob(client, NAME, blob)
    return image_manifest(config, [DATA])


def put_manifest(client: httpx.Client, manifest: bytes) -> httpx.Response:
    return client.put(f"/v2/{NAME}/manifests/v1", content=manifest, headers={"Content-Type": OCI_MANIFEST})


def test_a_crash_between_the_digest_key_and_the_tag_is_finished_by_the_retry(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "service.log"
    env = {**service_env, "CRASH_AT": f"write:(.*/)?v2/{NAME}/manifests/v1"}
    with service(env, log, CRASHING) as (_, url), httpx.Client(base_url=url, timeout=30) as client:
        manifest = manifest_of(client)
        crashed(client, "PUT", f"/v2/{NAME}/manifests/v1", content=manifest, headers={"Content-Type": OCI_MANIFEST})

    with service(service_env, log) as (_, url), httpx.Client(base_url=url, timeout=30) as client:
        assert client.get(f"/v2/{NAME}/manifests/{digest(manifest)}").content == manifest  # pullable by digest
        assert client.get(f"/v2/{NAME}/manifests/v1").status_code == 404  # the tag never points at nothing
        assert put_manifest(client, manifest).status_code == 201
        assert client.get(f"/v2/{NAME}/manifests/v1").content == manifest
        assert client.get(f"/v2/{NAME}/tags/list").json()["tags"] == ["v1"]


def test_a_crash_between_the_tag_and_the_tags_list_is_finished_by_the_retry(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "service.log"
    env = {**service_env, "CRASH_AT": "call:app.registry.documents:Documents.add_tags"}
    with service(env, log, CRASHING) as (_, url), httpx.Client(base_url=url, timeout=30) as client:
        manifest = manifest_of(client)
        crashed(client, "PUT", f"/v2/{NAME}/manifests/v1", content=manifest, headers={"Content-Type": OCI_MANIFEST})

    with service(service_env, log) as (_, url), httpx.Client(base_url=url, timeout=30) as client:
        assert client.get(f"/v2/{NAME}/manifests/v1").content == manifest
        assert put_manifest(client, manifest).status_code == 201
        assert client.get(f"/v2/{NAME}/tags/list").json()["tags"] == ["v1"]
        assert client.get("/v2/_catalog").json()["repositories"] == [NAME]
