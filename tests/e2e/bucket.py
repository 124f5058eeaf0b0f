"""What a push must leave in the bucket: the static layout a linksharing server turns into a read-only registry.

Read straight from S3 (not through the service), so a check passes only if the bucket alone is enough.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
INDEXES = {OCI_INDEX, DOCKER_LIST}
IMMUTABLE = "public, max-age=31536000, immutable"


@dataclass(frozen=True)
class Stored:
    body: bytes
    content_type: str
    cache_control: str | None


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class BucketLayout:
    def __init__(self, s3: Any, bucket: str) -> None:
        self.s3 = s3
        self.bucket = bucket

    def get(self, key: str) -> Stored:
        response = self.s3.get_object(Bucket=self.bucket, Key=key)
        return Stored(response["Body"].read(), response.get("ContentType", ""), response.get("CacheControl"))

    def json(self, key: str) -> dict[str, Any]:
        return json.loads(self.get(key).body)

    def check_pushed(self, name: str, tag: str, digest: str) -> dict[str, Any]:
        """Assert the whole layout of `name:tag` (= `digest`) and everything it references; return the manifest."""
        tagged = self.get(f"v2/{name}/manifests/{tag}")
        assert sha256(tagged.body) == digest, f"{name}:{tag} holds another manifest than the one pushed"
        manifest = self.check_manifest(name, digest)
        assert tagged.content_type == media_type(manifest)
        assert tag in self.json(f"v2/{name}/tags/list")["tags"]
        assert self.get(f"v2/{name}/tags/list").content_type == "application/json"
        assert name in self.json("v2/_catalog")["repositories"]
        assert self.get("v2/_catalog").content_type == "application/json"
        assert self.get("v2/index.html").content_type == "text/html"
        return manifest

    def check_manifest(self, name: str, digest: str) -> dict[str, Any]:
        """The manifest under its digest with its media type, its children and blobs, its referrers entry."""
        stored = self.get(f"v2/{name}/manifests/{digest}")
        assert sha256(stored.body) == digest
        manifest = json.loads(stored.body)
        assert stored.content_type == media_type(manifest), f"{name}@{digest} stored as {stored.content_type}"
        assert stored.cache_control == IMMUTABLE
        for child in manifest.get("manifests", []):
            self.check_manifest(name, child["digest"])
        for blob in [manifest["config"], *manifest.get("layers", [])] if "config" in manifest else []:
            self.check_blob(name, blob["digest"], blob["size"])
        if "subject" in manifest:
            referrers = self.get(f"v2/{name}/referrers/{manifest['subject']['digest']}")
            assert referrers.content_type == OCI_INDEX
            assert digest in [entry["digest"] for entry in json.loads(referrers.body)["manifests"]]
        return manifest

    def check_blob(self, name: str, digest: str, size: int) -> None:
        stored = self.get(f"v2/{name}/blobs/{digest}")
        assert (len(stored.body), sha256(stored.body)) == (size, digest), f"blob {digest} of {name}"
        assert stored.content_type == "application/octet-stream"
        try:  # blobs below REGISTRY_SHARE_MIN_BYTES have no location record; one that exists names a holder
            holder = self.get(f"v2/_blobs/{digest}").body.decode()
        except self.s3.exceptions.NoSuchKey:
            return
        self.s3.head_object(Bucket=self.bucket, Key=f"v2/{holder}/blobs/{digest}")

    def blobs_of(self, name: str, digest: str) -> dict[str, int]:
        """Every blob (config and layers) an image or index references, with its size."""
        manifest = self.json(f"v2/{name}/manifests/{digest}")
        found: dict[str, int] = {}
        for child in manifest.get("manifests", []):
            found |= self.blobs_of(name, child["digest"])
        if "config" in manifest:
            for blob in [manifest["config"], *manifest.get("layers", [])]:
                found[blob["digest"]] = blob["size"]
        return found


def media_type(manifest: dict[str, Any]) -> str:
    """The declared media type; OCI allows leaving it out, then the shape says which it is."""
    return manifest.get("mediaType") or (
        OCI_INDEX if "manifests" in manifest else "application/vnd.oci.image.manifest.v1+json"
    )
