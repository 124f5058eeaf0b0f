"""Benchmark images: OCI layouts written as a stream, so a 2 GiB layer never sits in memory.

tests/support/images.py builds layers in memory, which is fine for tests but not for the sizes measured here.
A layer is a gzip stream of *stored* (level 0) deflate blocks around a tar of one file of pseudo-random bytes:
a valid `tar+gzip` layer that skopeo pushes as-is (no recompression), written at disk speed, incompressible on
the wire, and a function of its seed alone.
"""

from __future__ import annotations

import hashlib
import json
import random
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

MiB = 1024 * 1024
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no flags, mtime 0, unknown OS
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int
    path: Path


@dataclass(frozen=True)
class Manifest:
    blob: Blob
    media_type: str


@dataclass(frozen=True)
class BenchImage:
    layout: Path
    tag: str
    blobs: list[Blob]  # configs and layers: what a push uploads besides the manifests
    manifests: list[Manifest]  # in push order: children (by digest) first, the tagged one last

    @property
    def ref(self) -> str:
        return f"oci:{self.layout}:{self.tag}"

    @property
    def size(self) -> int:
        return sum(blob.size for blob in self.blobs)


class _HashingWriter:
    """Writes to a file while hashing what goes in: the layer digest comes out of the single pass."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.hasher = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.handle.write(data)
        self.hasher.update(data)
        self.size += len(data)


def write_layer(layout: Path, seed: int, size: int) -> tuple[Blob, str]:
    """A `tar+gzip` layer holding `size` pseudo-random bytes; returns the blob and its diff_id."""
    temp = layout / "blobs" / "sha256" / f"tmp-{seed}"
    tar_hash = hashlib.sha256()
    compressor = zlib.compressobj(0, zlib.DEFLATED, -zlib.MAX_WBITS)
    crc = 0
    with temp.open("wb") as handle:
        out = _HashingWriter(handle)
        out.write(GZIP_HEADER)
        for piece in _tar_stream(seed, size):
            tar_hash.update(piece)
            crc = zlib.crc32(piece, crc)
            out.write(compressor.compress(piece))
        out.write(compressor.flush())
        out.write(crc.to_bytes(4, "little") + (_tar_size(size) % 2**32).to_bytes(4, "little"))
    digest = "sha256:" + out.hasher.hexdigest()
    path = temp.with_name(digest.split(":")[1])
    temp.rename(path)
    return Blob(digest, out.size, path), "sha256:" + tar_hash.hexdigest()


def _tar_size(size: int) -> int:
    return 512 + -(-size // 512) * 512 + 1024


def _tar_stream(seed: int, size: int) -> Any:
    member = tarfile.TarInfo(f"payload-{seed}.bin")
    member.size, member.mode, member.mtime = size, 0o644, 0
    yield member.tobuf(format=tarfile.USTAR_FORMAT)
    rng = random.Random(seed)
    remaining = size
    while remaining:
        step = min(remaining, MiB)
        yield rng.randbytes(step)
        remaining -= step
    yield b"\0" * (-size % 512) + b"\0" * 1024


def write_image(layout: Path, tag: str, seed: int, layer_sizes: list[int]) -> BenchImage:
    """An OCI layout holding one image tagged `tag` with layers of the given sizes (seeds `seed`, `seed+1`, ...)."""
    blobs, manifest = _write_manifest(layout, seed, layer_sizes, "amd64")
    _tag(layout, tag, manifest)
    return BenchImage(layout, tag, blobs, [manifest])


def write_index(layout: Path, tag: str, seed: int, layer_sizes: list[int], architectures: list[str]) -> BenchImage:
    """An OCI layout holding a multi-platform index tagged `tag`: one image per architecture, all layers distinct."""
    blobs: list[Blob] = []
    children: list[Manifest] = []
    for number, architecture in enumerate(architectures):
        image_blobs, child = _write_manifest(layout, seed + number * 100, layer_sizes, architecture)
        blobs += image_blobs
        children.append(child)
    platforms = [{"os": "linux", "architecture": architecture} for architecture in architectures]
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {**_descriptor(OCI_MANIFEST, child.blob), "platform": platform}
            for child, platform in zip(children, platforms, strict=True)
        ],
    }
    index = Manifest(_json_blob(layout, document), OCI_INDEX)
    _tag(layout, tag, index)
    return BenchImage(layout, tag, blobs, [*children, index])


def _write_manifest(layout: Path, seed: int, layer_sizes: list[int], architecture: str) -> tuple[list[Blob], Manifest]:
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    layers = [write_layer(layout, seed + i, size) for i, size in enumerate(layer_sizes)]
    config = _json_blob(
        layout,
        {
            "architecture": architecture,
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [diff for _, diff in layers]},
        },
    )
    manifest = _json_blob(
        layout,
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": _descriptor(OCI_CONFIG, config),
            "layers": [_descriptor(OCI_LAYER_GZIP, blob) for blob, _ in layers],
        },
    )
    return [config, *(blob for blob, _ in layers)], Manifest(manifest, OCI_MANIFEST)


def _tag(layout: Path, tag: str, manifest: Manifest) -> None:
    tagged = {
        **_descriptor(manifest.media_type, manifest.blob),
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [tagged]}
    (layout / "index.json").write_text(json.dumps(index))


def _json_blob(layout: Path, document: dict[str, Any]) -> Blob:
    data = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / digest.split(":")[1]
    path.write_bytes(data)
    return Blob(digest, len(data), path)


def _descriptor(media_type: str, blob: Blob) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": blob.digest, "size": blob.size}
