"""One small image (or artifact) of every shape a registry must carry, pushed by the client that makes it.

Images come from OCI layouts (tests/support/images.py) through skopeo, which can keep them OCI or convert them to
Docker schema 2; artifacts come through the oras SDK. Layers are tiny: the shapes are what is under test.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.clients import oras_client, skopeo_copy
from tests.support.images import make_layer, oci_ref, write_image, write_index

EMPTY_TAR_GZ = gzip.compress(b"\0" * 1024, mtime=0)  # a tar with no members: an image's "empty layer"
OCI_EMPTY = {
    "mediaType": "application/vnd.oci.empty.v1+json",
    "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
    "size": 2,
}
MANY_LAYERS = 101


IMAGE_CLIENTS = ("docker", "ctr", "skopeo")
# Which clients pull each shape: docker pulls images only; containerd 1.6 refuses any descriptor of size 0
# ("reports content size of zero"), so only skopeo and oras fetch the 0-byte blob.
PULLED_BY: dict[str, tuple[str, ...]] = {
    "oci-manifest": IMAGE_CLIENTS,
    "docker-manifest": IMAGE_CLIENTS,
    "oci-index": IMAGE_CLIENTS,
    "docker-list": IMAGE_CLIENTS,
    "many-layers": IMAGE_CLIENTS,
    "empty-layer": IMAGE_CLIENTS,
    "zero-byte-blob": ("skopeo", "oras"),
    "empty-config-no-layers": ("ctr", "skopeo", "oras"),
}


@dataclass(frozen=True)
class Shape:
    repository: str
    tag: str
    digest: str

    @property
    def reference(self) -> str:
        return f"{self.repository}:{self.tag}"


def push_shapes(push_host: str, work: Path) -> dict[str, Shape]:
    """Push every shape to the service at `push_host`; returns them by shape name."""
    source = work / "shapes"
    write_image(source, "oci-manifest", [make_layer(1001, 512), make_layer(1002, 256)])
    write_image(source, "docker-manifest", [make_layer(1003, 512)])
    write_index(source, "oci-index", [("linux", "amd64"), ("linux", "arm64")], layer_size=256, seed=1010)
    write_index(source, "docker-list", [("linux", "amd64"), ("linux", "arm64")], layer_size=256, seed=1020)
    write_image(source, "many-layers", [make_layer(1100 + i, 16) for i in range(MANY_LAYERS)])
    write_image(source, "empty-layer", [make_layer(1030, 256), EMPTY_TAR_GZ])
    skopeo_options = {
        "oci-manifest": ("--preserve-digests",),
        "docker-manifest": ("--format", "v2s2"),
        "oci-index": ("--all", "--preserve-digests"),
        "docker-list": ("--all", "--format", "v2s2"),
        "many-layers": ("--preserve-digests",),
        "empty-layer": ("--preserve-digests",),
    }
    shapes = {}
    for shape, options in skopeo_options.items():
        repository = f"shapes/{shape}"
        digest = skopeo_copy(oci_ref(source, shape), f"docker://{push_host}/{repository}:v1", *options)
        shapes[shape] = Shape(repository, "v1", digest)
    shapes["zero-byte-blob"] = push_zero_byte_artifact(push_host, work)
    shapes["empty-config-no-layers"] = push_layerless_artifact(push_host, work)
    return shapes


def push_zero_byte_artifact(push_host: str, work: Path) -> Shape:
    """An oras artifact whose only layer is the 0-byte blob (sha256:e3b0c442...)."""
    empty = work / "empty.bin"
    empty.write_bytes(b"")
    config = work / "artifact-config.json"
    config.write_text('{"kind":"zero-byte"}')
    repository = "shapes/zero-byte-blob"
    response = oras_client(push_host).push(
        f"{push_host}/{repository}:v1",
        files=[f"{empty}:application/vnd.example.empty.v1"],
        manifest_config=f"{config}:application/vnd.example.config.v1+json",
        disable_path_validation=True,
        quiet=True,
    )
    return Shape(repository, "v1", response.headers["Docker-Content-Digest"])


def push_layerless_artifact(push_host: str, work: Path) -> Shape:
    """An artifact with `artifactType`, the OCI empty config `{}` and no layers at all.

    The oras SDK's `push` cannot set a manifest-level `artifactType`, so its lower-level calls push the blob and
    the manifest: still the SDK's requests (HEAD, POST, PUT), with a manifest written here.
    """
    repository = "shapes/empty-config-no-layers"
    client = oras_client(push_host)
    container = client.get_container(f"{push_host}/{repository}:v1")
    empty_config = work / "empty-config.json"
    empty_config.write_text("{}")
    assert client.upload_blob(str(empty_config), container, OCI_EMPTY).status_code in (200, 201)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.example.layerless.v1",
        "config": OCI_EMPTY,
        "layers": [],
    }
    response = client.upload_manifest(manifest, container)
    assert response.status_code == 201, response.text
    return Shape(repository, "v1", response.headers["Docker-Content-Digest"])
