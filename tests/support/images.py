"""Container images without a daemon: OCI image layouts on disk, deterministic from a seed.

skopeo reads them as `oci:DIR:TAG` (see `oci_ref`), umoci unpacks them. Layers hold incompressible bytes so
a layer's size on the wire is the size asked for.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OCI_LAYOUT_VERSION = "1.0.0"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"


@dataclass(frozen=True)
class Image:
    manifest_digest: str
    manifest_bytes: bytes
    config_digest: str
    config_bytes: bytes
    layer_digests: list[str]
    media_type: str = OCI_MANIFEST
    platform: tuple[str, str] = ("linux", "amd64")  # (os, architecture)


@dataclass(frozen=True)
class Index:
    digest: str
    index_bytes: bytes
    children: list[Image]
    media_type: str = OCI_INDEX

    @property
    def child_digests(self) -> list[str]:
        return [child.manifest_digest for child in self.children]


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> str:
    with path.open("rb") as handle:
        return "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()


def oci_ref(layout_dir: Path, tag: str) -> str:
    """The skopeo transport reference for a tag in a layout."""
    return f"oci:{layout_dir}:{tag}"


def blob_path(layout_dir: Path, digest: str) -> Path:
    algorithm, _, hex_digest = digest.partition(":")
    return layout_dir / "blobs" / algorithm / hex_digest


def make_layer(seed: int, size: int) -> bytes:
    """A gzip'd tar holding one regular file of `size` pseudo-random bytes; same seed, same bytes."""
    payload = random.Random(seed).randbytes(size)
    member = tarfile.TarInfo(f"layer-{seed}.bin")
    member.size = size
    member.mode = 0o644
    member.mtime = 0
    tar_buffer = io.BytesIO()
    with tarfile.open(fileobj=tar_buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(member, io.BytesIO(payload))
    # Fixed mtime in the gzip header keeps the digest a function of the seed alone.
    return gzip.compress(tar_buffer.getvalue(), compresslevel=1, mtime=0)


def diff_id(layer: bytes) -> str:
    """sha256 of the uncompressed tar, hashed while decompressing (layers can be large)."""
    hasher = hashlib.sha256()
    with gzip.GzipFile(fileobj=io.BytesIO(layer)) as stream:
        while chunk := stream.read(1 << 20):
            hasher.update(chunk)
    return "sha256:" + hasher.hexdigest()


def write_blob(layout_dir: Path, data: bytes) -> str:
    """Store `data` under blobs/sha256/ (idempotent) and return its digest."""
    digest = sha256_digest(data)
    path = blob_path(layout_dir, digest)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return digest


def init_layout(layout_dir: Path) -> None:
    """Create `oci-layout`, an empty `index.json` and `blobs/sha256/` unless they already exist."""
    (layout_dir / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    marker = layout_dir / "oci-layout"
    if not marker.exists():
        marker.write_text(json.dumps({"imageLayoutVersion": OCI_LAYOUT_VERSION}))
    index = layout_dir / "index.json"
    if not index.exists():
        index.write_text(json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}))


def write_image(
    layout_dir: Path,
    tag: str,
    layers: list[bytes],
    *,
    arch: str = "amd64",
    os_: str = "linux",
    config_extra: dict[str, Any] | None = None,
) -> Image:
    """Write an image manifest (and its config and layers) and tag it in the layout's index.json."""
    init_layout(layout_dir)
    image = _write_manifest(layout_dir, layers, arch, os_, config_extra)
    _tag(layout_dir, tag, _descriptor(OCI_MANIFEST, image.manifest_bytes))
    return image


def write_index(
    layout_dir: Path,
    tag: str,
    platforms: list[tuple[str, str]],
    layer_size: int = 1024,
    seed: int = 0,
) -> Index:
    """A multi-platform OCI index tagged `tag`; platforms are (os, architecture) pairs like ("linux", "arm64").

    Each child gets one layer of `layer_size` bytes from seed `seed + i`, so children differ. The children
    are stored as blobs only: the index is the one thing tagged.
    """
    init_layout(layout_dir)
    children = [
        _write_manifest(layout_dir, [make_layer(seed + i, layer_size)], arch, os_, None)
        for i, (os_, arch) in enumerate(platforms)
    ]
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            _descriptor(OCI_MANIFEST, child.manifest_bytes, platform=_platform(*child.platform)) for child in children
        ],
    }
    index_bytes = _canonical(document)
    digest = write_blob(layout_dir, index_bytes)
    _tag(layout_dir, tag, _descriptor(OCI_INDEX, index_bytes))
    return Index(digest=digest, index_bytes=index_bytes, children=children)


def _write_manifest(
    layout_dir: Path, layers: list[bytes], arch: str, os_: str, config_extra: dict[str, Any] | None
) -> Image:
    config = {
        "architecture": arch,
        "os": os_,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id(layer) for layer in layers]},
        **(config_extra or {}),
    }
    config_bytes = _canonical(config)
    config_digest = write_blob(layout_dir, config_bytes)
    layer_digests = [write_blob(layout_dir, layer) for layer in layers]
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": _descriptor(OCI_CONFIG, config_bytes),
        "layers": [_descriptor(OCI_LAYER_GZIP, layer) for layer in layers],
    }
    manifest_bytes = _canonical(manifest)
    return Image(
        manifest_digest=write_blob(layout_dir, manifest_bytes),
        manifest_bytes=manifest_bytes,
        config_digest=config_digest,
        config_bytes=config_bytes,
        layer_digests=layer_digests,
        platform=(os_, arch),
    )


def _tag(layout_dir: Path, tag: str, descriptor: dict[str, Any]) -> None:
    """Point `tag` at `descriptor` in index.json, replacing what the tag named before."""
    index_path = layout_dir / "index.json"
    index = json.loads(index_path.read_text())
    kept = [entry for entry in index["manifests"] if entry.get("annotations", {}).get(REF_NAME) != tag]
    kept.append({**descriptor, "annotations": {REF_NAME: tag}})
    index["manifests"] = kept
    index_path.write_text(json.dumps(index, indent=2))


def _descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256_digest(data), "size": len(data), **extra}


def _platform(os_: str, arch: str) -> dict[str, str]:
    return {"architecture": arch, "os": os_}


def _canonical(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
