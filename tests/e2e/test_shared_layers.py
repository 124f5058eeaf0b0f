"""Layers shared across repositories are never sent twice.

Image A goes to one repository, then image B, built on A's base layers, to another. The service's own count of
blob bytes received while B is pushed (`registry_received_bytes_total`) must be exactly B's own blobs (its top
layer and config): the base layers arrive by server-side copy, through automatic sharing on HEAD (skopeo asks
HEAD first) or through a cross-repository mount (docker remembers where it pushed a layer and asks to mount).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.bucket import BucketLayout
from tests.e2e.clients import docker_digest, metric, skopeo_copy
from tests.e2e.conftest import Endpoints
from tests.e2e.test_docker import docker_load, image_id
from tests.support.daemons import Daemon
from tests.support.images import blob_path, make_layer, oci_ref, write_image

pytestmark = pytest.mark.e2e


def layers(seed: int) -> tuple[list[bytes], bytes, bytes]:
    """Two base layers, then the top layers of A and B (each test its own: configs would be shared too)."""
    return (
        [make_layer(seed, 64 * 1024), make_layer(seed + 1, 32 * 1024)],
        make_layer(seed + 2, 8 * 1024),
        make_layer(seed + 3, 4 * 1024),
    )


def received(endpoints: Endpoints) -> float:
    """Upload bytes the service received, all repositories together (the tests here push one at a time)."""
    return metric(endpoints.service_url, "registry_received_bytes_total")


def committed(endpoints: Endpoints, how: str) -> float:
    return metric(endpoints.service_url, "registry_committed_blobs_total", how=how)


def copies(endpoints: Endpoints) -> float:
    """Blobs that entered a repository by server-side copy: cross-repository mounts and automatic sharing."""
    return committed(endpoints, "mount") + committed(endpoints, "share")


def test_skopeo_second_image_sends_only_its_own_layers(
    endpoints: Endpoints, layout: BucketLayout, work: Path, tmp_path: Path
) -> None:
    base, top_a, top_b = layers(6000)
    source = work / "shared-skopeo"
    image_a = write_image(source, "a", [*base, top_a])
    image_b = write_image(source, "b", [*base, top_b])
    skopeo_copy(oci_ref(source, "a"), f"docker://{endpoints.push}/shared/skopeo-a:v1", "--preserve-digests")

    bytes_before, shared_before = received(endpoints), committed(endpoints, "share")
    skopeo_copy(oci_ref(source, "b"), f"docker://{endpoints.push}/shared/skopeo-b:v1", "--preserve-digests")
    own = len(top_b) + len(image_b.config_bytes)
    assert received(endpoints) - bytes_before == own
    assert committed(endpoints, "share") - shared_before == len(base)  # copied on HEAD, not mounted
    layout.check_pushed("shared/skopeo-b", "v1", image_b.manifest_digest)
    assert image_a.layer_digests[: len(base)] == image_b.layer_digests[: len(base)]

    pulled = tmp_path / "pulled"
    static_ref = f"docker://{endpoints.pull}/shared/skopeo-b:v1"
    assert skopeo_copy(static_ref, oci_ref(pulled, "v1"), "--preserve-digests") == image_b.manifest_digest
    for digest in [image_b.config_digest, *image_b.layer_digests]:
        assert blob_path(pulled, digest).read_bytes() == blob_path(source, digest).read_bytes()


def test_docker_second_image_sends_only_its_own_layers(
    dockerd: Daemon, endpoints: Endpoints, layout: BucketLayout, work: Path
) -> None:
    """docker re-compresses on push: B's own bytes are what its manifest lists beyond A's."""
    base, top_a, top_b = layers(6100)
    ref_a, ref_b = f"{endpoints.push}/shared/docker-a:v1", f"{endpoints.push}/shared/docker-b:v1"
    docker_load(dockerd, work, ref_a, [*base, top_a])
    docker_load(dockerd, work, ref_b, [*base, top_b])
    manifest_a = layout.check_pushed("shared/docker-a", "v1", docker_digest(dockerd.run("push", ref_a)))

    before, copied_before = received(endpoints), copies(endpoints)
    digest_b = docker_digest(dockerd.run("push", ref_b))
    assert copies(endpoints) - copied_before == len(base)
    manifest_b = layout.check_pushed("shared/docker-b", "v1", digest_b)
    blobs_a = {blob["digest"] for blob in [manifest_a["config"], *manifest_a["layers"]]}
    own = [blob for blob in [manifest_b["config"], *manifest_b["layers"]] if blob["digest"] not in blobs_a]
    assert len(own) == 2  # B's top layer and config; the base layers are A's
    assert received(endpoints) - before == sum(blob["size"] for blob in own)

    loaded_b = image_id(dockerd, ref_b)
    dockerd.run("rmi", ref_a, ref_b)
    static_ref = f"{endpoints.pull}/shared/docker-b:v1"
    assert docker_digest(dockerd.run("pull", static_ref)) == digest_b
    assert image_id(dockerd, static_ref) == loaded_b
    dockerd.run("rmi", static_ref)
