"""Manifests: validate, publish in a pullable order, read back, delete.

Publishing order keeps every intermediate state of the bucket pullable: the manifest under its digest first, then
the tag and then the tags list; the catalog and the referrers index of its subject go alongside the tag, since no
pull depends on them. Every blob and child manifest it names must already be in the repository (asked of
`app.registry.known`, which answers from memory where that is safe), so a tag never points at something missing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from anyio.to_thread import run_sync as run

from app import layout
from app.errors import DigestInvalid, ManifestBlobUnknown, ManifestInvalid, ManifestUnknown
from app.registry.formats import Manifest, check_urls, parse_manifest
from app.registry.gc_runs import GcRuns
from app.registry.indexes import Indexes
from app.registry.known import Kind, Known
from app.registry.policy import PolicyFile, refusal
from app.registry.publishing import Publishing
from app.registry.references import algorithm_of, digest_of, is_digest, sha256_digest
from app.storage import ObjectExists, Storage

MAX_REPORTED_MISSING = 10


@dataclass(frozen=True)
class StoredManifest:
    body: bytes
    media_type: str
    digest: str
    last_modified: float | None = None  # when it was stored: the push time the catalog page shows


@dataclass(frozen=True)
class PutResult:
    digest: str
    subject: str | None
    tags: tuple[str, ...] = ()


class Manifests:
    def __init__(
        self,
        storage: Storage,
        indexes: Indexes,
        known: Known,
        publishing: Publishing,
        max_descriptors: int | None = None,
        *,
        sparse: bool = False,
        policy: PolicyFile | None = None,
        gc_runs: GcRuns | None = None,
        urls_allowed: frozenset[str] = frozenset(),
    ) -> None:
        self.storage = storage
        self.indexes = indexes
        self.known = known
        self.publishing = publishing
        self.max_descriptors = max_descriptors
        self.sparse = sparse  # REGISTRY_SPARSE_MANIFESTS: accept manifests whose blobs or children are absent
        self.policy = policy or PolicyFile(None)  # REGISTRY_POLICY: immutable tags
        self.gc_runs = gc_runs or GcRuns(storage, 0)  # a running gc's candidates a push relies on are claimed
        self.urls_allowed = urls_allowed  # REGISTRY_MANIFEST_URLS_ALLOW: hosts descriptor `urls` may name

    async def put(
        self,
        name: str,
        reference: str,
        body: bytes,
        content_type: str | None,
        *,
        tags: Sequence[str] = (),
        named: str | None = None,
    ) -> PutResult:
        """Validate, then publish under the digest, then (with the catalog and the referrers index alongside) the
        tags and the tags list. Each step waits only for what it must follow.

        The tags are the reference when it is a tag, and `tags` (a push by digest with `?tag=`). `named` is a
        digest the client asked for (`?digest=`): a manifest pushed by tag is then keyed by it (sha512) instead
        of its sha256.
        """
        manifest = parse_manifest(body, content_type, max_descriptors=self.max_descriptors)
        check_urls(manifest, self.urls_allowed)
        digest = self._digest_for(reference, body, named)
        tags = tuple(dict.fromkeys(([] if is_digest(reference) else [reference]) + list(tags)))
        await self._refuse_moving_immutable(name, tags, body)
        await self.gc_runs.claim(self._relied_on(name, manifest, digest, tags))
        await self._require_references(name, manifest)
        await self.indexes.ensure_index_html()
        await self._write_by_digest(name, digest, body, manifest.media_type)
        steps = [self.indexes.add_to_catalog(name)]
        if tags:
            steps.append(self._write_tags(name, tags, body, manifest.media_type))
        if manifest.subject is not None:
            descriptor = manifest.descriptor(digest, len(body))
            steps.append(self.indexes.add_referrer(name, manifest.subject.digest, descriptor))
        await asyncio.gather(*steps)
        return PutResult(digest, manifest.subject.digest if manifest.subject else None, tags)

    async def _write_by_digest(self, name: str, digest: str, body: bytes, media_type: str) -> None:
        if not self.known.vouched(name, Kind.MANIFEST, digest):
            key = layout.manifest(name, digest)
            write = partial(self.storage.put_bytes, if_absent=True)
            with contextlib.suppress(ObjectExists):  # the same bytes, pushed before
                await run(write, key, body, media_type, layout.MANIFEST_CACHE_IMMUTABLE)
        self.known.wrote(name, Kind.MANIFEST, digest, len(body))

    async def _write_tags(self, name: str, tags: tuple[str, ...], body: bytes, media_type: str) -> None:
        """Write the tags, then the tags list unless every tag was already in it.

        Without deletes a tag, once there, stays: a tag this process listed (or wrote and listed) needs no
        rebuild. Otherwise the rebuild starts from the tags memory knows, and its look after the write corrects.
        """
        put = partial(self.storage.put_bytes, content_type=media_type, cache_control=layout.MUTABLE_CACHE)
        await asyncio.gather(*(run(put, layout.manifest(name, tag), body) for tag in tags))
        known_tags = self.known.tags(name)
        if self.known.deletes_enabled or known_tags is None or not set(tags) <= known_tags:
            await self.indexes.refresh_tags(name, None if known_tags is None else known_tags | set(tags))
        for tag in tags:
            self.known.wrote(name, Kind.MANIFEST, tag, len(body))

    @staticmethod
    def _digest_for(reference: str, body: bytes, named: str | None = None) -> str:
        """By digest, the body must hash to the reference; by tag, the manifest is keyed by its sha256, or by the
        digest the client named (which it must hash to)."""
        if named is not None and named != reference:
            if is_digest(reference) or digest_of(body, algorithm_of(named)) != named:
                raise DigestInvalid("manifest does not hash to the digest given", detail={"digest": named})
            return named
        if not is_digest(reference):
            return sha256_digest(body)
        actual = digest_of(body, algorithm_of(reference))
        if actual != reference:
            raise ManifestInvalid(
                "manifest digest does not match the reference",
                detail={"reference": reference, "digest": actual},
            )
        return reference

    async def _refuse_moving_immutable(self, name: str, tags: Sequence[str], body: bytes) -> None:
        """An immutable tag may be pushed again with the same bytes (a CI retry), never moved. Its object is read
        only when a rule names it, so other pushes cost nothing more."""
        policy = self.policy.current()
        for tag in tags:
            rule = policy.immutable_rule(name, tag)
            if rule is None:
                continue
            found = await run(self.storage.read_small, layout.manifest(name, tag))
            if found is not None and found[0] != body:
                raise refusal(rule, name, tag, "moved")

    def _refuse_deleting_immutable(self, name: str, tags: Sequence[str]) -> None:
        policy = self.policy.current()
        for tag in tags:
            if rule := policy.immutable_rule(name, tag):
                raise refusal(rule, name, tag, "deleted")

    @staticmethod
    def _relied_on(name: str, manifest: Manifest, digest: str, tags: Sequence[str]) -> list[str]:
        """The keys a push of `manifest` needs to stay: what it names, its digest key, its tags."""
        keys = [layout.blob(name, d.digest) for d in manifest.blobs if not d.external]
        keys += [layout.manifest(name, d.digest) for d in manifest.children]
        return keys + [layout.manifest(name, reference) for reference in (digest, *tags)]

    async def _require_references(self, name: str, manifest: Manifest) -> None:
        blobs = [d.digest for d in manifest.blobs if not d.external]
        await self.publishing.settle(name, blobs)  # blobs acknowledged to the client, still on their way
        if self.sparse:
            return
        missing = await self.known.missing(name, blobs, [d.digest for d in manifest.children])
        if missing:
            raise ManifestBlobUnknown(
                "manifest references content missing from the repository",
                detail={"missing": missing[:MAX_REPORTED_MISSING], "count": len(missing)},
            )

    async def get(self, name: str, reference: str) -> StoredManifest:
        found = await run(self.storage.read_small, layout.manifest(name, reference))
        if found is None:
            raise ManifestUnknown("manifest unknown", detail={"name": name, "reference": reference})
        body, info = found
        digest = reference if is_digest(reference) else await self._tag_digest(name, body)
        return StoredManifest(body, info.content_type, digest, info.last_modified)

    async def _tag_digest(self, name: str, body: bytes) -> str:
        """A tag's manifest is named by its sha256, unless it was pushed named by its sha512: then only that key
        exists. Looked for only in a manifest naming sha512 content, so other tags cost no extra request."""
        if b'"sha512:' in body:
            sha512 = digest_of(body, "sha512")
            if await run(self.storage.stat, layout.manifest(name, sha512)) is not None:
                return sha512
        return sha256_digest(body)

    async def delete(self, name: str, reference: str) -> None:
        """Delete a tag, or a manifest by digest together with every tag pointing at it."""
        stored = await self.get(name, reference)
        if is_digest(reference):
            tags = await run(self._tags_pointing_at, name, reference)
            self._refuse_deleting_immutable(name, tags)
            for tag in tags:
                await self._delete(name, tag)
            await self._delete(name, reference)
            await self._forget_referrer(name, stored)
        else:
            self._refuse_deleting_immutable(name, [reference])
            await self._delete(name, reference)
        await self.indexes.refresh_tags(name)

    async def _delete(self, name: str, reference: str) -> None:
        self.known.forget(name, Kind.MANIFEST, reference)
        await run(self.storage.delete, layout.manifest(name, reference))

    def _tags_pointing_at(self, name: str, digest: str) -> list[str]:
        tags = []
        for child in self.storage.list_children(layout.manifests_dir(name)):
            if is_digest(child):
                continue
            found = self.storage.read_small(layout.manifest(name, child))
            if found is not None and digest_of(found[0], algorithm_of(digest)) == digest:
                tags.append(child)
        return tags

    async def _forget_referrer(self, name: str, stored: StoredManifest) -> None:
        try:
            manifest = parse_manifest(stored.body, stored.media_type)
        except ManifestInvalid:
            return
        if manifest.subject is not None:
            await self.indexes.remove_referrer(name, manifest.subject.digest, stored.digest)
