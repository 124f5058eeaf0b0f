"""Genuine docker: `docker load` a generated image, `docker push` it, `docker pull` it back from the bucket and
through the service.

docker re-compresses layers on push, so the digests to compare are the ones docker reports for its push (a
Docker schema 2 manifest): the bucket must hold exactly that manifest, and every pull must arrive at it and at
the same image ID (the config digest).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e.bucket import BucketLayout
from tests.e2e.clients import docker_digest, skopeo
from tests.e2e.conftest import Endpoints
from tests.support.daemons import CommandFailed, Daemon
from tests.support.images import make_layer, oci_ref, write_image

pytestmark = pytest.mark.e2e

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def docker_load(dockerd: Daemon, work: Path, reference: str, layers: list[bytes]) -> None:
    """A generated OCI image, turned into a docker archive by skopeo and loaded under `reference`."""
    source = work / f"docker-{reference.rsplit('/', 1)[1].replace(':', '-')}"
    write_image(source, "v1", layers)
    archive = source.with_suffix(".tar")
    skopeo("copy", oci_ref(source, "v1"), f"docker-archive:{archive}:{reference}")
    dockerd.run("load", "--input", str(archive))


def image_id(dockerd: Daemon, reference: str) -> str:
    return dockerd.run("image", "inspect", "--format", "{{.Id}}", reference).strip()


def test_docker_push_then_pull_from_the_bucket_and_through_the_service(
    dockerd: Daemon, endpoints: Endpoints, layout: BucketLayout, work: Path
) -> None:
    name = "e2e/docker"
    pushed_ref, static_ref = f"{endpoints.push}/{name}:v1", f"{endpoints.pull}/{name}:v1"
    docker_load(dockerd, work, pushed_ref, [make_layer(2001, 4096), make_layer(2002, 2048)])
    loaded_id = image_id(dockerd, pushed_ref)

    digest = docker_digest(dockerd.run("push", pushed_ref))
    manifest = layout.check_pushed(name, "v1", digest)
    assert manifest["mediaType"] == DOCKER_MANIFEST
    assert manifest["config"]["digest"] == loaded_id

    dockerd.run("rmi", pushed_ref)  # the daemon holds nothing of the image any more
    since = len(endpoints.static.requests)
    assert docker_digest(dockerd.run("pull", static_ref)) == digest
    assert image_id(dockerd, static_ref) == loaded_id
    served = {record.path for record in endpoints.static.requests[since:] if record.status == 200}
    assert {f"/v2/{name}/blobs/{layer['digest']}" for layer in manifest["layers"]} <= served

    dockerd.run("rmi", static_ref)
    assert docker_digest(dockerd.run("pull", pushed_ref)) == digest  # blob GETs redirect to the bucket
    assert image_id(dockerd, pushed_ref) == loaded_id
    dockerd.run("rmi", pushed_ref)


@pytest.mark.parametrize("name", ["e2e/blobs", "e2e/app/manifests"])
def test_docker_push_to_a_reserved_name_stops_at_once_saying_why(
    dockerd: Daemon, endpoints: Endpoints, work: Path, name: str
) -> None:
    """docker retries NAME_INVALID five times (about 50 s) before it says why; DENIED ends the push at once."""
    reference = f"{endpoints.push}/{name}:v1"
    docker_load(dockerd, work, reference, [make_layer(2101, 1024)])
    started = time.monotonic()
    with pytest.raises(CommandFailed) as refused:
        dockerd.run("push", reference)
    elapsed = time.monotonic() - started
    reserved = name.rsplit("/", 1)[1]
    assert f"denied: '{reserved}' is a reserved path component" in str(refused.value), refused.value
    assert "Retrying" not in str(refused.value)
    assert elapsed < 10, elapsed
    dockerd.run("rmi", reference)
