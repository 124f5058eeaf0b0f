"""Copy an image (every platform, its referrers) from a source into the bucket, through the registry's own code.

Blobs go through an upload session and `Blobs.commit` (the digest and size verified, the same write path and
records as a push), or `Blobs.share` when another repository of the bucket already holds them (a server-side
copy); manifests go through `Manifests.put` (validation, references present, write order, tags list, catalog,
referrers index). Children before parents, blobs before manifests: an interrupted copy leaves nothing a tag
points at half-written, and the rerun finds what is done and finishes the rest.

A manifest already published in full is left alone, so a copy with nothing new makes no writes: it is in the
bucket under its digest, its referrer entry is there, and, when tagged, the tag holds the same bytes and the
tags list and catalog name it. Each of those is written by `Manifests.put` after the previous one, so a copy
interrupted in the middle of a put is seen as unfinished and put again.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from anyio.to_thread import run_sync as run

from app import layout
from app.errors import DigestInvalid
from app.mirror.source import Fetched, Source, SourceError
from app.registry import Registry
from app.registry.blobs import SharingPolicy
from app.registry.formats import INDEXES, Descriptor, Manifest, parse_manifest
from app.registry.references import DIGEST_RE
from app.registry.uploads import Body

BLOB_CONCURRENCY = 4
BLOB_ATTEMPTS = 3  # a stream cut in the middle is fetched again from the start


class Events(Protocol):
    """Progress of a copy, for the terminal (app.mirror.progress)."""

    def blob_started(self, digest: str, size: int) -> None: ...

    def blob_advanced(self, digest: str, count: int) -> None: ...

    def blob_finished(self, digest: str, how: str) -> None:
        """`how`: uploaded, mounted (copied from another repository of the bucket), present, or failed."""

    def manifest_finished(self, name: str, digest: str, how: str) -> None:
        """`how`: written or present."""


@dataclass
class Tally:
    """What a copy did; a rerun with nothing new shows only `present`."""

    blobs_uploaded: int = 0
    blobs_mounted: int = 0
    blobs_present: int = 0
    bytes_uploaded: int = 0
    manifests_written: int = 0
    manifests_present: int = 0

    def add(self, other: Tally) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def writes(self) -> int:
        return self.blobs_uploaded + self.blobs_mounted + self.manifests_written


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"a platform is OS/ARCH or OS/ARCH/VARIANT, not {text!r}")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    def matches(self, descriptor: dict[str, Any]) -> bool:
        platform = descriptor.get("platform")
        return (
            isinstance(platform, dict)
            and platform.get("os") == self.os
            and platform.get("architecture") == self.architecture
            and (self.variant is None or platform.get("variant") == self.variant)
        )

    def __str__(self) -> str:
        return "/".join(part for part in (self.os, self.architecture, self.variant) if part)


@dataclass
class Copier:
    registry: Registry
    events: Events
    platform: Platform | None = None
    with_referrers: bool = True
    tally: Tally = field(default_factory=Tally)
    _blob_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(BLOB_CONCURRENCY))
    _walked: set[tuple[str, str]] = field(default_factory=set)
    _cataloged: set[str] = field(default_factory=set)

    async def copy(self, source: Source, reference: str, name: str, tag: str | None) -> str:
        """Copy `reference` of `source` to `name` (under `tag`, else by digest); returns the digest copied."""
        fetched = await self._chosen(source, await self._fetch(source, reference))
        await self._manifest(source, name, fetched, tag)
        return fetched.digest

    async def _chosen(self, source: Source, fetched: Fetched) -> Fetched:
        """With `--platform`, the one image of an index that matches it (copied and tagged on its own)."""
        manifest = parse_manifest(fetched.body, fetched.media_type)
        if self.platform is None or manifest.media_type not in INDEXES:
            return fetched
        entries = json.loads(fetched.body).get("manifests") or []
        for entry in entries:
            if self.platform.matches(entry):
                return await self._fetch(source, entry["digest"], entry.get("mediaType"))
        offered = sorted({str(_platform_of(entry)) for entry in entries if isinstance(entry.get("platform"), dict)})
        raise SourceError(f"no image for {self.platform} in {fetched.digest} (it has: {', '.join(offered)})")

    async def _manifest(self, source: Source, name: str, fetched: Fetched, tag: str | None) -> None:
        manifest = parse_manifest(fetched.body, fetched.media_type)
        if await self._published(name, fetched, manifest, tag):
            self.tally.manifests_present += 1
            self.events.manifest_finished(name, fetched.digest, "present")
        else:
            for child in manifest.children:
                await self._manifest(source, name, await self._fetch(source, child.digest, child.media_type), None)
            blobs = {blob.digest: blob for blob in manifest.blobs if not blob.external}
            await asyncio.gather(*(self._blob(source, name, blob) for blob in blobs.values()))
            await self.registry.manifests.put(name, tag or fetched.digest, fetched.body, fetched.media_type)
            self._cataloged.add(name)
            self.tally.manifests_written += 1
            self.events.manifest_finished(name, fetched.digest, "written")
        if self.with_referrers:
            for digest in (fetched.digest, *(child.digest for child in manifest.children)):
                await self._referrers_of(source, name, digest)

    async def _referrers_of(self, source: Source, name: str, digest: str) -> None:
        if (name, digest) in self._walked:
            return
        self._walked.add((name, digest))
        for entry in await source.referrers(digest):
            referrer = entry.get("digest")
            if not isinstance(referrer, str) or not DIGEST_RE.fullmatch(referrer):
                raise SourceError(f"{source.describe()}: a referrer of {digest} has no valid digest")
            media_type = entry.get("mediaType")
            fetched = await self._fetch(source, referrer, media_type if isinstance(media_type, str) else None)
            await self._manifest(source, name, fetched, None)

    async def _fetch(self, source: Source, reference: str, media_type: str | None = None) -> Fetched:
        """A manifest of the source, within the size a push to the registry may have."""
        return await source.manifest(reference, media_type, limit=self.registry.settings.max_manifest_bytes)

    async def _published(self, name: str, fetched: Fetched, manifest: Manifest, tag: str | None) -> bool:
        """Whether `Manifests.put` of this manifest already ran to its end (read-only checks, cheapest first)."""
        storage = self.registry.storage
        if await run(storage.stat, layout.manifest(name, fetched.digest)) is None:
            return False
        if manifest.subject is not None:
            subject = manifest.subject.digest
            if await run(storage.stat, layout.referrer_entry(name, subject, fetched.digest)) is None:
                return False
            listed = (await self.registry.documents.referrers(name, subject)).get("manifests") or []
            if fetched.digest not in {entry.get("digest") for entry in listed}:
                return False
        if tag is None:
            return True
        found = await run(storage.read_small, layout.manifest(name, tag))
        if found is None or found[0] != fetched.body or tag not in (await self.registry.documents.tags(name) or []):
            return False
        if name not in self._cataloged and name in await self.registry.documents.catalog():
            self._cataloged.add(name)
        return name in self._cataloged

    async def _blob(self, source: Source, name: str, blob: Descriptor) -> None:
        async with self._blob_slots:
            blobs = self.registry.blobs
            if await blobs.size(name, blob.digest) is not None:
                self.tally.blobs_present += 1
                self.events.blob_finished(blob.digest, "present")
            elif await blobs.share(name, blob.digest, ANYWHERE) is not None:
                self.tally.blobs_mounted += 1
                self.events.blob_finished(blob.digest, "mounted")
            else:
                await self._upload(source, name, blob)
                self.tally.blobs_uploaded += 1
                self.tally.bytes_uploaded += blob.size
                self.events.blob_finished(blob.digest, "uploaded")

    async def _upload(self, source: Source, name: str, blob: Descriptor) -> None:
        """Stream the blob into an upload session and commit it; a cut stream is fetched again from the start."""
        for attempt in range(BLOB_ATTEMPTS):
            self.events.blob_started(blob.digest, blob.size)
            try:
                await self._upload_once(source, name, blob)
                return
            except SourceError:
                self.events.blob_finished(blob.digest, "failed")
                if attempt + 1 == BLOB_ATTEMPTS:
                    raise

    async def _upload_once(self, source: Source, name: str, blob: Descriptor) -> None:
        uploads = self.registry.uploads
        upload = uploads.create(name)
        try:
            async with source.blob(blob.digest) as chunks:
                size = await uploads.receive(upload, Body(self._bounded(blob, chunks)))
            if size != blob.size:
                raise SourceError(f"blob {blob.digest} has {size} bytes, its descriptor says {blob.size}")
            await self.registry.blobs.commit(upload, blob.digest)
        except DigestInvalid as exc:  # commit dropped the session: nothing reached the bucket
            raise SourceError(f"blob {blob.digest} does not hash to its digest") from exc
        except BaseException:
            if upload.directory.exists():
                await uploads.discard(upload)
            raise

    async def _bounded(self, blob: Descriptor, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The chunks, reported as progress, and refused as soon as they pass the descriptor's size."""
        received = 0
        async for chunk in chunks:
            received += len(chunk)
            if received > blob.size:
                raise SourceError(f"blob {blob.digest} is larger than its descriptor's {blob.size} bytes")
            self.events.blob_advanced(blob.digest, len(chunk))
            yield chunk


ANYWHERE = SharingPolicy()  # the copier writes with the bucket's own credentials: any repository may lend a blob


def _platform_of(entry: dict[str, Any]) -> Platform:
    """An index entry's platform, for messages (whatever JSON an upstream put there)."""
    platform = entry["platform"]
    variant = platform.get("variant")
    return Platform(str(platform.get("os", "?")), str(platform.get("architecture", "?")), variant and str(variant))
