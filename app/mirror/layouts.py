"""Images on local disk: an OCI image layout (a directory or an `oci-archive` tar) and a `docker save` archive."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import anyio.to_thread

from app.mirror.files import COMPRESSED_MAGIC, Archive, Directory, Extent, Files, read_json, read_small, stream
from app.mirror.source import Fetched, SourceError, checked
from app.registry.formats import DOCKER_MANIFEST, IMAGE_MANIFESTS
from app.registry.references import DIGEST_RE, digest_of

REF_NAME = "org.opencontainers.image.ref.name"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
# What skopeo declares for the (uncompressed) layers of a docker-archive; kept so manifests match its digests.
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def blob_name(digest: str) -> str:
    if not DIGEST_RE.fullmatch(digest):
        raise SourceError(f"invalid digest {digest[:80]!r}")
    return "blobs/" + digest.replace(":", "/", 1)


def declared_type(body: bytes) -> str | None:
    try:
        document = json.loads(body)
    except ValueError:
        return None
    media_type = document.get("mediaType") if isinstance(document, dict) else None
    return media_type if isinstance(media_type, str) else None


def _check_entry(entry: Any, what: str) -> None:
    """An entry of index.json as the copier reads it: a digest, and a media type and annotations of strings.

    Its ref name is checked as a tag only when it is copied (`app.mirror.jobs`): one bad name leaves the others
    of the layout usable.
    """
    digest = entry.get("digest") if isinstance(entry, dict) else None
    if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
        raise SourceError(f"{what} has no valid digest")
    annotations = entry.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(isinstance(value, str) for value in annotations.values()):
        raise SourceError(f"{what}: annotations must map strings to strings")
    if not isinstance(entry.get("mediaType") or "", str):
        raise SourceError(f"{what}: mediaType must be a string")


def _ref_name(entry: dict[str, Any]) -> str | None:
    return (entry.get("annotations") or {}).get(REF_NAME)


class OciLayout:
    """`oci:DIR[:REF]` and `oci-archive:FILE[:REF]`: REF is a `org.opencontainers.image.ref.name` or a digest."""

    def __init__(self, files: Files, label: str, reference: str | None) -> None:
        self.files = files
        self.label = label
        self.reference = reference
        self.index = read_json(files, "index.json")
        if not isinstance(self.index, dict) or not isinstance(self.index.get("manifests"), list):
            raise SourceError(f"{label}: index.json lists no manifests")
        for position, entry in enumerate(self.index["manifests"]):
            _check_entry(entry, f"{label}: index.json manifests[{position}]")
        self._subjects: dict[str, list[dict[str, Any]]] | None = None

    def describe(self) -> str:
        return self.label + (f":{self.reference}" if self.reference else "")

    def default_reference(self) -> str | None:
        if self.reference is not None:
            return self.reference
        entries = self.index["manifests"]
        if len(entries) != 1:
            raise SourceError(f"{self.label} holds {len(entries)} images: name one (tags: {', '.join(self._names())})")
        return _ref_name(entries[0]) or entries[0]["digest"]

    def _names(self) -> list[str]:
        return [_ref_name(entry) or "" for entry in self.index["manifests"]]

    def _entry(self, reference: str) -> dict[str, Any] | None:
        key = "digest" if DIGEST_RE.fullmatch(reference) else None
        for entry in self.index["manifests"]:
            value = entry.get("digest") if key else _ref_name(entry)
            if value == reference:
                return entry
        return None

    async def manifest(self, reference: str, media_type: str | None = None, *, limit: int) -> Fetched:
        entry = self._entry(reference)
        if entry is None and not DIGEST_RE.fullmatch(reference):
            raise SourceError(f"{self.label} has no image named {reference!r} (tags: {', '.join(self._names())})")
        digest = entry["digest"] if entry else reference
        body = await anyio.to_thread.run_sync(read_small, self.files, blob_name(digest), limit)
        return checked(body, media_type or (entry or {}).get("mediaType") or declared_type(body), digest)

    def blob(self, digest: str) -> Any:
        return stream(self.files.extent(blob_name(digest)))

    async def referrers(self, digest: str) -> list[dict[str, Any]]:
        """The manifests of index.json whose `subject` is `digest` (where oras and skopeo keep referrers)."""
        if self._subjects is None:
            self._subjects = await anyio.to_thread.run_sync(self._read_subjects)
        return self._subjects.get(digest, [])

    def _read_subjects(self) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = {}
        for entry in self.index["manifests"]:
            if entry.get("mediaType") not in IMAGE_MANIFESTS:
                continue
            document = read_json(self.files, blob_name(entry["digest"]))
            subject = document.get("subject") if isinstance(document, dict) else None
            if isinstance(subject, dict) and isinstance(subject.get("digest"), str):
                found.setdefault(subject["digest"], []).append(entry)
        return found

    async def tags(self) -> list[str]:
        return [name for name in self._names() if name]

    async def aclose(self) -> None:
        return None


class DockerArchive:
    """`docker-archive:FILE[:NAME:TAG]`, what `docker save` writes: manifest.json, a config, layer tars.

    The archive holds no manifest, so one is built the way skopeo builds it (`skopeo inspect --raw` prints the
    same bytes, so digests agree with skopeo's view of the archive): Docker schema 2, the config unchanged (the
    image ID is kept), each layer stored as it is in the archive (an uncompressed tar, its digest the diff ID).
    """

    def __init__(self, archive: Archive, label: str, reference: str | None) -> None:
        self.files = archive
        self.label = label
        entries = read_json(archive, "manifest.json")
        if not isinstance(entries, list) or not entries:
            raise SourceError(f"{label}: manifest.json lists no image")
        for position, entry in enumerate(entries):
            _check_saved(entry, f"{label}: manifest.json [{position}]")
        self.entry = self._choose(entries, reference)
        self.repo_tags: list[str] = self.entry.get("RepoTags") or []
        self.reference = reference
        self.config_name: str = self.entry["Config"]
        self.config = read_small(archive, self.config_name)
        self.layers = self._layers()
        self.built = self._build()

    def _choose(self, entries: list[dict[str, Any]], reference: str | None) -> dict[str, Any]:
        if reference is None:
            if len(entries) != 1:
                raise SourceError(f"{self.label} holds {len(entries)} images: name one as {self.label}:NAME:TAG")
            return entries[0]
        for entry in entries:
            if any(normalise(tag) == normalise(reference) for tag in entry.get("RepoTags") or []):
                return entry
        raise SourceError(f"{self.label} has no image tagged {reference!r}")

    def _layers(self) -> dict[str, Extent]:
        """Each layer's digest (its diff ID, as the config lists it) and where its bytes are."""
        diff_ids = _diff_ids(self.config, f"{self.label}: {self.config_name}")
        paths = self.entry.get("Layers") or []
        if len(diff_ids) != len(paths):
            raise SourceError(f"{self.label}: the config lists {len(diff_ids)} layers, manifest.json {len(paths)}")
        layers: dict[str, Extent] = {}
        for diff_id, path in zip(diff_ids, paths, strict=True):
            extent = self.files.extent(path)
            with extent.path.open("rb") as handle:
                handle.seek(extent.offset)
                if handle.read(4).startswith(COMPRESSED_MAGIC):
                    raise SourceError(f"{self.label}: layer {path} is compressed; only docker save's tars are read")
            layers[diff_id] = extent
        return layers

    def _build(self) -> Fetched:
        document = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "size": len(self.config), "digest": digest_of(self.config)},
            "layers": [
                {"mediaType": DOCKER_LAYER, "size": extent.length, "digest": digest}
                for digest, extent in self.layers.items()
            ],
        }
        body = json.dumps(document, separators=(",", ":")).encode()
        return Fetched(body, DOCKER_MANIFEST, digest_of(body))

    def describe(self) -> str:
        return self.label + (f":{self.reference}" if self.reference else "")

    def default_reference(self) -> str | None:
        tag = (self.reference or (self.repo_tags[0] if self.repo_tags else "")).rpartition(":")[2]
        return tag or self.built.digest

    async def manifest(self, reference: str, media_type: str | None = None, *, limit: int) -> Fetched:
        """The built manifest, asked for by its digest or one of its tags (a few hundred bytes: `limit` holds)."""
        if reference in (self.built.digest, self.default_reference()) or reference in await self.tags():
            return self.built
        raise SourceError(
            f"{self.describe()} holds {self.built.digest} tagged {', '.join(self.repo_tags)}, not {reference}"
        )

    def blob(self, digest: str) -> Any:
        if digest == digest_of(self.config):
            return stream(self.files.extent(self.config_name))
        if digest not in self.layers:
            raise SourceError(f"{self.label} has no blob {digest}")
        return stream(self.layers[digest])

    async def referrers(self, digest: str) -> list[dict[str, Any]]:
        return []

    async def tags(self) -> list[str]:
        """The tags of the chosen image (name it in the source to read another image of the archive)."""
        return [tag.rpartition(":")[2] for tag in self.repo_tags]

    async def aclose(self) -> None:
        return None


def _check_saved(entry: Any, what: str) -> None:
    """An image of `docker save`'s manifest.json: a config path, and lists of strings for its tags and layers."""
    if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
        raise SourceError(f"{what} names no config")
    for key in ("RepoTags", "Layers"):
        value = entry.get(key) or []
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise SourceError(f"{what}: {key} must be a list of strings")


def _diff_ids(config: bytes, what: str) -> list[str]:
    """The layer digests an image config lists (`rootfs.diff_ids`)."""
    try:
        rootfs = json.loads(config).get("rootfs") or {}
        diff_ids = rootfs.get("diff_ids") or []
    except (ValueError, AttributeError) as exc:
        raise SourceError(f"{what} is not an image config") from exc
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) and DIGEST_RE.fullmatch(d) for d in diff_ids):
        raise SourceError(f"{what}: rootfs.diff_ids must be a list of digests")
    return diff_ids


def normalise(reference: str) -> str:
    """`docker.io/library/app:1`, `library/app:1` and `app:1` name the same image."""
    for prefix in ("docker.io/", "library/"):
        reference = reference.removeprefix(prefix)
    return reference


def open_local(transport: str, location: str) -> OciLayout | DockerArchive:
    """`oci`, `oci-archive` or `docker-archive` with `PATH[:REF]` (the path ends at its first `:`)."""
    path_text, _, reference = location.partition(":")
    path = Path(os.path.expanduser(path_text))
    label = f"{transport}:{path_text}"
    if transport == "oci":
        return OciLayout(Directory(path), label, reference or None)
    if not path.is_file():
        raise SourceError(f"{path} is not a file")
    if transport == "oci-archive":
        return OciLayout(Archive(path), label, reference or None)
    return DockerArchive(Archive(path), label, reference or None)
