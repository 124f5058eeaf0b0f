"""skopeo (the podman/buildah transport: POST, one streamed PATCH, PUT): `copy --all` of a multi-platform OCI
index, children pushed by digest and the index by tag, then the same `copy --all` back from the bucket."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.bucket import BucketLayout
from tests.e2e.clients import skopeo_copy
from tests.e2e.conftest import Endpoints
from tests.support.images import blob_path, oci_ref, write_index

pytestmark = pytest.mark.e2e

PLATFORMS = [("linux", "amd64"), ("linux", "arm64"), ("linux", "ppc64le")]


def test_skopeo_copy_all_multi_platform_push_and_pull_from_the_bucket(
    endpoints: Endpoints, layout: BucketLayout, work: Path, tmp_path: Path
) -> None:
    name = "e2e/skopeo"
    source = work / "skopeo-index"
    index = write_index(source, "multi", PLATFORMS, layer_size=2048, seed=4000)

    pushed = skopeo_copy(
        oci_ref(source, "multi"), f"docker://{endpoints.push}/{name}:multi", "--all", "--preserve-digests"
    )
    assert pushed == index.digest
    layout.check_pushed(name, "multi", index.digest)  # the index by tag and digest, each child by digest
    assert layout.json(f"v2/{name}/tags/list") == {"name": name, "tags": ["multi"]}  # children by digest only

    pulled_layout = tmp_path / "pulled"
    static_ref = f"docker://{endpoints.pull}/{name}:multi"
    assert skopeo_copy(static_ref, oci_ref(pulled_layout, "multi"), "--all", "--preserve-digests") == index.digest
    expected = {index.digest, *index.child_digests}
    for child in index.children:
        expected |= {child.config_digest, *child.layer_digests}
    for digest in expected:
        assert blob_path(pulled_layout, digest).read_bytes() == blob_path(source, digest).read_bytes(), digest
