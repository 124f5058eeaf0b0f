"""Small HTTP helpers for tests that push blobs and manifests by hand (the spec's own requests)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import httpx

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def error_code(response: httpx.Response) -> str:
    """The OCI error code of a refusal (the first of its `errors`)."""
    return response.json()["errors"][0]["code"]


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_blob(client: httpx.Client, name: str, data: bytes) -> str:
    """Monolithic upload: POST for a session, then PUT with the whole body."""
    started = client.post(f"/v2/{name}/blobs/uploads/")
    assert started.status_code == 202, started.text
    finished = client.put(started.headers["Location"], params={"digest": digest(data)}, content=data)
    assert finished.status_code == 201, finished.text
    return digest(data)


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest(data), "size": len(data), **extra}


@dataclass
class PushedImage:
    manifest: bytes
    digest: str
    config: bytes
    layers: list[bytes]


def image_manifest(config: bytes, layers: list[bytes], media_type: str = OCI_MANIFEST, **extra: Any) -> bytes:
    document = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": descriptor(OCI_CONFIG, config),
        "layers": [descriptor(OCI_LAYER, layer) for layer in layers],
        **extra,
    }
    return json.dumps(document).encode()


def push_manifest(client: httpx.Client, name: str, reference: str, body: bytes, media_type: str) -> httpx.Response:
    return client.put(f"/v2/{name}/manifests/{reference}", content=body, headers={"Content-Type": media_type})


def push_image(client: httpx.Client, name: str, tag: str, seed: int = 0, **extra: Any) -> PushedImage:
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    layers = [f"layer-{seed}-{i}".encode() * 100 for i in range(2)]
    for blob in (config, *layers):
        push_blob(client, name, blob)
    manifest = image_manifest(config, layers, **extra)
    response = push_manifest(client, name, tag, manifest, OCI_MANIFEST)
    assert response.status_code == 201, response.text
    return PushedImage(manifest, digest(manifest), config, layers)


def monolithic_push(client: httpx.Client, name: str, tag: str, blobs: list[bytes]) -> None:
    """oras and containerd: HEAD, POST, one PUT with the whole body; then the manifest."""
    for blob in blobs:
        assert client.head(f"/v2/{name}/blobs/{digest(blob)}").status_code == 404
        location = client.post(f"/v2/{name}/blobs/uploads/").headers["Location"]
        assert client.put(location, params={"digest": digest(blob)}, content=blob).status_code == 201
    manifest = image_manifest(blobs[0], blobs[1:])
    pushed = client.put(f"/v2/{name}/manifests/{tag}", content=manifest, headers={"Content-Type": OCI_MANIFEST})
    assert pushed.status_code == 201
