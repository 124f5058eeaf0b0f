"""Parsing and validating manifests: Docker schema 2 manifests and lists, OCI manifests and indexes.

Validation is structural (what the registry must know to keep the bucket consistent): the media type, and
well-formed descriptors for everything the manifest references. The bytes are stored exactly as received.

`urls` (where else a client may fetch a blob) are taken as distribution takes them: a pushed manifest may name
them only for hosts of an allow-list (REGISTRY_MANIFEST_URLS_ALLOW, empty by default: none), over http(s), and
only a non-distributable layer with them is exempt from being in the repository (`Descriptor.external`); the
config never is. Clients such as containerd fetch a descriptor's `urls` first, so unchecked ones would send
them anywhere (`javascript:`, a cloud metadata address).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from app.errors import ManifestBlobUnknown, ManifestInvalid
from app.layout import OCI_INDEX
from app.registry.references import DIGEST_RE

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"

NON_DISTRIBUTABLE_PREFIX = "application/vnd.oci.image.layer.nondistributable.v1.tar"  # deprecated, still pushed
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

IMAGE_MANIFESTS = {DOCKER_MANIFEST, OCI_MANIFEST}
INDEXES = {DOCKER_MANIFEST_LIST, OCI_INDEX}
MANIFEST_TYPES = IMAGE_MANIFESTS | INDEXES


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    artifact_type: str | None = None
    annotations: dict[str, str] | None = None
    external: bool = False  # a non-distributable layer with `urls`: its bytes live elsewhere
    urls: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.annotations:
            out["annotations"] = self.annotations
        return out


@dataclass(frozen=True)
class Manifest:
    media_type: str
    blobs: list[Descriptor] = field(default_factory=list)
    children: list[Descriptor] = field(default_factory=list)
    subject: Descriptor | None = None
    artifact_type: str | None = None
    annotations: dict[str, str] | None = None

    def descriptor(self, digest: str, size: int) -> Descriptor:
        """How this manifest is listed in its subject's referrers index."""
        return Descriptor(self.media_type, digest, size, self.artifact_type, self.annotations)


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ManifestInvalid("duplicate key in manifest JSON", detail={"key": key[:100]})
        result[key] = value
    return result


def _load_json(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body, object_pairs_hook=_reject_duplicate_keys)
    except (ValueError, RecursionError) as exc:
        raise ManifestInvalid("manifest is not valid JSON") from exc
    if not isinstance(document, dict):
        raise ManifestInvalid("manifest must be a JSON object")
    _refuse_lone_surrogates(document)
    return document


def _refuse_lone_surrogates(document: dict[str, Any]) -> None:
    """JSON may escape half a UTF-16 pair (`"\\ud800"`); no UTF-8 text holds one, so no index could list it."""
    try:
        json.dumps(document, ensure_ascii=False).encode()
    except UnicodeEncodeError as exc:
        raise ManifestInvalid("manifest holds a lone UTF-16 surrogate escape") from exc
    except RecursionError as exc:
        raise ManifestInvalid("manifest is nested too deeply") from exc


def media_type_of(content_type: str | None, document: dict[str, Any]) -> str:
    """Reconcile the Content-Type header with the body's `mediaType`; they must agree when both are given."""
    header = (content_type or "").split(";", 1)[0].strip().lower()
    declared = document.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise ManifestInvalid("mediaType must be a string")
    if header in MANIFEST_TYPES and declared and declared != header:
        raise ManifestInvalid(
            "Content-Type does not match the manifest's mediaType",
            detail={"contentType": header, "mediaType": declared},
        )
    media_type = declared or (header if header in MANIFEST_TYPES else None)
    if media_type not in MANIFEST_TYPES:
        raise ManifestInvalid("unsupported manifest media type", detail={"mediaType": media_type or header or None})
    return media_type


def _string_map(value: Any, what: str) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ManifestInvalid(f"{what} must map strings to strings")
    return value


def is_non_distributable(media_type: str) -> bool:
    return media_type.startswith(NON_DISTRIBUTABLE_PREFIX) or media_type == DOCKER_FOREIGN_LAYER


def _urls(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(url, str) for url in value):
        raise ManifestInvalid(f"{what} urls must be a list of strings")
    return tuple(value)


def parse_descriptor(value: Any, what: str, *, layer: bool = False) -> Descriptor:
    """A descriptor; only a `layer` (of an image manifest) may be external."""
    if not isinstance(value, dict):
        raise ManifestInvalid(f"{what} must be a descriptor object")
    media_type, digest, size = value.get("mediaType"), value.get("digest"), value.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise ManifestInvalid(f"{what} has no mediaType")
    if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
        raise ManifestInvalid(f"{what} has an invalid digest", detail={"digest": str(digest)[:200]})
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ManifestInvalid(f"{what} has an invalid size")
    artifact_type = value.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise ManifestInvalid(f"{what} has an invalid artifactType")
    urls = _urls(value.get("urls"), what)
    return Descriptor(
        media_type=media_type,
        digest=digest,
        size=size,
        artifact_type=artifact_type,
        annotations=_string_map(value.get("annotations"), f"{what} annotations"),
        external=layer and bool(urls) and is_non_distributable(media_type),
        urls=urls,
    )


def _descriptor_list(document: dict[str, Any], key: str, *, required: bool) -> list[Descriptor]:
    value = document.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise ManifestInvalid(f"manifest needs a '{key}' array")
    return [parse_descriptor(item, f"{key}[{i}]", layer=key == "layers") for i, item in enumerate(value)]


def check_urls(manifest: Manifest, allowed_hosts: Collection[str]) -> None:
    """Refuse `urls` that are not http(s) on an allowed host (no credentials, no fragment), as distribution does:
    with `MANIFEST_BLOB_UNKNOWN`, the descriptor then counting as content the repository lacks."""
    subject = [manifest.subject] if manifest.subject is not None else []
    for descriptor in [*manifest.blobs, *manifest.children, *subject]:
        for url in descriptor.urls:
            problem = _url_problem(url, allowed_hosts)
            if problem is not None:
                raise ManifestBlobUnknown(
                    f"descriptor urls refused: {problem}", detail={"digest": descriptor.digest, "url": url[:300]}
                )


def _url_problem(url: str, allowed_hosts: Collection[str]) -> str | None:
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return "not a URL"
    if parts.scheme not in ("http", "https") or not host:
        return "only http(s) URLs"
    if parts.username is not None or parts.fragment:
        return "no credentials or fragment in URLs"
    if host not in allowed_hosts:
        return "host not in REGISTRY_MANIFEST_URLS_ALLOW"
    return None


def _check_descriptor_count(document: dict[str, Any], limit: int) -> None:
    """Refuse a manifest naming more than `limit` blobs and manifests, before any of them is parsed or checked.

    Each one costs a storage call when the manifest is pushed (a round trip to Storj) and an entry in what is
    kept about it; 4 MiB of JSON holds about 37,000 descriptors. The OCI specs set no number, docker runs at
    most 125 layers, an index lists one manifest per platform: the default (1000) is far above real images.
    """
    count = sum(len(value) for key in ("layers", "manifests") if isinstance(value := document.get(key), list))
    if count > limit:
        raise ManifestInvalid(
            f"manifest names more than {limit} descriptors", detail={"descriptors": count, "limit": limit}
        )


def parse_manifest(body: bytes, content_type: str | None, *, max_descriptors: int | None = None) -> Manifest:
    """A validated manifest; with `max_descriptors`, one naming more layers and children than that is refused."""
    document = _load_json(body)
    if document.get("schemaVersion") != 2:
        raise ManifestInvalid("schemaVersion must be 2")
    if max_descriptors is not None:
        _check_descriptor_count(document, max_descriptors)
    media_type = media_type_of(content_type, document)
    subject = document.get("subject")
    artifact_type = document.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise ManifestInvalid("artifactType must be a string")
    common = {
        "media_type": media_type,
        "subject": parse_descriptor(subject, "subject") if subject is not None else None,
        "annotations": _string_map(document.get("annotations"), "annotations"),
    }
    if media_type in INDEXES:
        children = _descriptor_list(document, "manifests", required=True)
        return Manifest(children=children, artifact_type=artifact_type, **common)
    config = parse_descriptor(document.get("config"), "config")
    layers = _descriptor_list(document, "layers", required=media_type == DOCKER_MANIFEST)
    return Manifest(blobs=[config, *layers], artifact_type=artifact_type or config.media_type, **common)
