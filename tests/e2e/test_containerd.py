"""Genuine containerd: `ctr images import` a generated image, `ctr images push` it (POST, then one PUT with the
whole blob), and `ctr images pull` it back from the bucket into a namespace that has none of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.bucket import BucketLayout
from tests.e2e.clients import skopeo
from tests.e2e.conftest import Endpoints
from tests.support.daemons import Daemon
from tests.support.images import make_layer, oci_ref, write_image

pytestmark = pytest.mark.e2e


def image_digests(containerd: Daemon, namespace: str) -> dict[str, str]:
    """`ctr images ls` as {reference: manifest digest}."""
    rows = containerd.run("--namespace", namespace, "images", "ls").splitlines()[1:]
    return {row.split()[0]: row.split()[2] for row in rows}


def forget(containerd: Daemon, namespace: str, reference: str, digests: list[str]) -> None:
    """Drop the image and its content: containerd shares content between namespaces, and the pull must fetch."""
    containerd.run("--namespace", namespace, "images", "rm", "--sync", reference)
    containerd.run("--namespace", namespace, "content", "rm", *digests)


def test_ctr_push_then_pull_from_the_bucket(
    containerd: Daemon, endpoints: Endpoints, layout: BucketLayout, work: Path
) -> None:
    name = "e2e/containerd"
    source = work / "containerd-image"
    image = write_image(source, "v1", [make_layer(3001, 4096), make_layer(3002, 1024)])
    archive = work / "containerd-image.tar"
    skopeo("copy", oci_ref(source, "v1"), f"oci-archive:{archive}:v1")
    containerd.run("--namespace", "push", "images", "import", "--base-name", f"{endpoints.push}/{name}", str(archive))
    pushed_ref = f"{endpoints.push}/{name}:v1"
    assert image_digests(containerd, "push")[pushed_ref] == image.manifest_digest

    containerd.run("--namespace", "push", "images", "push", "--plain-http", pushed_ref)
    layout.check_pushed(name, "v1", image.manifest_digest)
    forget(containerd, "push", pushed_ref, [image.manifest_digest, image.config_digest, *image.layer_digests])

    static_ref = f"{endpoints.pull}/{name}:v1"
    since = len(endpoints.static.requests)
    pull = ("images", "pull", "--plain-http", "--snapshotter", "native", static_ref)
    containerd.run("--namespace", "pull", *pull)
    assert image_digests(containerd, "pull")[static_ref] == image.manifest_digest
    served = {record.path for record in endpoints.static.requests[since:] if record.status == 200}
    blobs = [image.config_digest, *image.layer_digests]
    assert {f"/v2/{name}/blobs/{digest}" for digest in blobs} <= served
    mounted = containerd.run("--namespace", "pull", "snapshots", "--snapshotter", "native", "ls")
    assert len(mounted.splitlines()) - 1 == len(image.layer_digests)  # unpacked: one snapshot per layer
