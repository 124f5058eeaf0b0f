"""Every image shape, pushed once, pulled from the static server over the bucket by each client that supports it."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.e2e.bucket import BucketLayout
from tests.e2e.clients import docker_digest, oras_client, skopeo_copy
from tests.e2e.conftest import Endpoints
from tests.e2e.shapes import PULLED_BY, Shape, push_shapes
from tests.support.daemons import Daemon
from tests.support.static_server import StaticBucketServer

pytestmark = pytest.mark.e2e

PULLS = [(shape, client) for shape, clients in PULLED_BY.items() for client in clients]


@pytest.fixture(scope="module")
def shapes(endpoints: Endpoints, work: Path) -> dict[str, Shape]:
    return push_shapes(endpoints.push, work)


@pytest.mark.parametrize("name", PULLED_BY)
def test_push_leaves_the_static_layout(name: str, shapes: dict[str, Shape], layout: BucketLayout) -> None:
    shape = shapes[name]
    layout.check_pushed(shape.repository, shape.tag, shape.digest)


def test_the_special_blobs_are_in_the_bucket(shapes: dict[str, Shape], layout: BucketLayout) -> None:
    zero = layout.blobs_of(shapes["zero-byte-blob"].repository, shapes["zero-byte-blob"].digest)
    assert zero["sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"] == 0
    layerless = shapes["empty-config-no-layers"]
    manifest = layout.json(f"v2/{layerless.repository}/manifests/{layerless.digest}")
    assert manifest["layers"] == [] and manifest["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"
    assert layout.get(f"v2/{layerless.repository}/blobs/{manifest['config']['digest']}").body == b"{}"
    many = shapes["many-layers"]
    assert len(layout.json(f"v2/{many.repository}/manifests/{many.digest}")["layers"]) > 100


@pytest.mark.parametrize(("name", "client"), PULLS)
def test_pull_from_the_bucket(
    name: str,
    client: str,
    shapes: dict[str, Shape],
    endpoints: Endpoints,
    layout: BucketLayout,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    shape = shapes[name]
    since = len(endpoints.static.requests)
    if client == "docker":
        expected_blobs = pull_with_docker(request.getfixturevalue("dockerd"), endpoints, layout, shape)
    elif client == "ctr":
        expected_blobs = pull_with_ctr(request.getfixturevalue("containerd"), endpoints, layout, shape, name)
    elif client == "skopeo":
        # `dir:` keeps every manifest as it is (an OCI layout cannot hold a Docker list without converting it).
        pulled = skopeo_copy(
            f"docker://{endpoints.pull}/{shape.reference}", f"dir:{tmp_path}", "--all", "--preserve-digests"
        )
        assert pulled == shape.digest
        expected_blobs = set(layout.blobs_of(shape.repository, shape.digest))
    else:
        expected_blobs = pull_with_oras(endpoints, layout, shape, tmp_path)
    assert expected_blobs <= fetched_blobs(endpoints.static, since), "some blobs were not fetched from the bucket"


def pull_with_docker(dockerd: Daemon, endpoints: Endpoints, layout: BucketLayout, shape: Shape) -> set[str]:
    """docker picks the linux/amd64 image; its image ID is that image's config digest."""
    reference = f"{endpoints.pull}/{shape.reference}"
    assert docker_digest(dockerd.run("pull", reference)) == shape.digest
    image = amd64_manifest(layout, shape)
    try:
        assert dockerd.run("image", "inspect", "--format", "{{.Id}}", reference).strip() == image["config"]["digest"]
    finally:
        dockerd.run("rmi", reference)
    return {layer["digest"] for layer in image["layers"]} | {image["config"]["digest"]}


def pull_with_ctr(containerd: Daemon, endpoints: Endpoints, layout: BucketLayout, shape: Shape, name: str) -> set[str]:
    """Every platform, unpacked with the native snapshotter, in a namespace of its own (nothing cached)."""
    reference = f"{endpoints.pull}/{shape.reference}"
    namespace = ("--namespace", f"shape-{name}")
    pull = ("images", "pull", "--plain-http", "--snapshotter", "native", "--all-platforms", reference)
    containerd.run(*namespace, *pull)
    listed = containerd.run(*namespace, "images", "ls").splitlines()[1:]
    assert {row.split()[0]: row.split()[2] for row in listed}[reference] == shape.digest
    return set(layout.blobs_of(shape.repository, shape.digest))


def pull_with_oras(endpoints: Endpoints, layout: BucketLayout, shape: Shape, tmp_path: Path) -> set[str]:
    client = oras_client(endpoints.pull)
    target = f"{endpoints.pull}/{shape.reference}"
    manifest = client.get_manifest(target)
    assert manifest == layout.json(f"v2/{shape.repository}/manifests/{shape.digest}")
    files = client.pull(target=target, outdir=str(tmp_path / "pulled"))
    assert [Path(path).read_bytes() for path in files] == [b""] * len(manifest["layers"])
    return {layer["digest"] for layer in manifest["layers"]}


def amd64_manifest(layout: BucketLayout, shape: Shape) -> dict:
    manifest = layout.json(f"v2/{shape.repository}/manifests/{shape.digest}")
    for child in manifest.get("manifests", []):
        if child["platform"]["architecture"] == "amd64":
            return layout.json(f"v2/{shape.repository}/manifests/{child['digest']}")
    return manifest


def fetched_blobs(static: StaticBucketServer, since: int) -> set[str]:
    """Digests of the blobs the static server served (200 or 206) since request number `since`."""
    served = [record for record in static.requests[since:] if record.method == "GET" and record.status in (200, 206)]
    return {record.path.rsplit("/", 1)[1] for record in served if "/blobs/" in record.path}


def test_manifests_are_served_with_their_media_type(shapes: dict[str, Shape], endpoints: Endpoints) -> None:
    """What linksharing sends: Content-Type = the stored media type, for the tag and the digest alike."""
    for shape in shapes.values():
        for reference in (shape.tag, shape.digest):
            response = httpx.get(f"http://{endpoints.pull}/v2/{shape.repository}/manifests/{reference}")
            assert response.status_code == 200
            assert response.headers["Content-Type"] == json.loads(response.content).get(
                "mediaType", "application/vnd.oci.image.manifest.v1+json"
            )
