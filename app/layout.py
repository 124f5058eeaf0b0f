"""The static bucket layout: the only module that spells object keys.

Every key a registry client would GET is an object at the same path (see docs/storj.md), so a static file
server over the bucket (Storj linksharing) answers pulls without this service. Callers pass validated names,
tags and digests (see `app.registry.references`); this module never sees raw client input.
"""

from __future__ import annotations

MANIFEST_CACHE_IMMUTABLE = "public, max-age=31536000, immutable"
MUTABLE_CACHE = "no-cache"

INDEX_HTML = "v2/index.html"
CATALOG = "v2/_catalog"
JSON = "application/json"
HTML = "text/html"
TEXT = "text/plain"
OCTET_STREAM = "application/octet-stream"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def blob(name: str, digest: str) -> str:
    return f"v2/{name}/blobs/{digest}"


def manifest(name: str, reference: str) -> str:
    """Key of a manifest under a tag or a digest (both live side by side)."""
    return f"v2/{name}/manifests/{reference}"


def manifests_dir(name: str) -> str:
    return f"v2/{name}/manifests/"


def blobs_dir(name: str) -> str:
    return f"v2/{name}/blobs/"


def tags_list(name: str) -> str:
    return f"v2/{name}/tags/list"


def referrers(name: str, subject_digest: str) -> str:
    return f"v2/{name}/referrers/{subject_digest}"


def referrers_dir(name: str) -> str:
    return f"v2/{name}/referrers/"


def repository_dir(name: str) -> str:
    return f"v2/{name}/"


def blob_location(digest: str) -> str:
    """Record naming one repository that holds blob `digest` (automatic layer sharing, README "Shared layers").

    `_blobs` cannot be a repository name (names start with `[a-z0-9]`), so the key never collides with one.
    """
    return f"v2/_blobs/{digest}"


def name_from_tags_list_key(key: str) -> str | None:
    """Inverse of `tags_list`, used when rebuilding the catalog from a listing."""
    if key.startswith("v2/") and key.endswith("/tags/list"):
        return key[len("v2/") : -len("/tags/list")]
    return None
