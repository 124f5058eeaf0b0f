"""Manifests: validate, publish in a pullable order, read back, delete.

Publishing order keeps every intermediate state of the bucket pullable: the manifest under its digest first,
then the tag, then the tags list and catalog, then the referrers index of its subject. Every blob and child
manifest it names must already be in the repository, so a tag never points at something missing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from anyio.to_thread import run_sync as run

from app import layout
from app.errors import DigestInvalid, ManifestBlobUnknown, ManifestInvalid, ManifestUnknown
from app.registry.formats import Manifest, parse_manifest
from app.registry.gc_runs import GcRuns
from app.registry.indexes import Indexes
from app.registry.policy import PolicyFile, refusal
from app.registry.references import algorithm_of, digest_of, is_digest, sha256_digest
from app.storage import Storage


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
        max_descriptors: int | None = None,
        *,
        sparse: bool = False,
        policy: PolicyFile | None = None,
        gc_runs: GcRuns | None = None,
    ) -> None:
        self.storage = storage
        self.indexes = indexes
        self.max_descriptors = max_descriptors
        self.sparse = sparse  # REGISTRY_SPARSE_MANIFESTS: accept manifests whose blobs or children are absent
        self.policy = policy or PolicyFile(None)  # REGISTRY_POLICY: immutable tags
        self.gc_runs = gc_runs or GcRuns(storage, 0)  # a running gc's candidates a push relies on are claimed

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
        """Publish a manifest under its digest and its tags: the reference when it is a tag, and `tags` (a push
        by digest with `?tag=`). `named` is a digest the client asked for (`?digest=`): a manifest pushed by tag
        is then keyed by it (sha512) instead of its sha256."""
        manifest = parse_manifest(body, content_type, max_descriptors=self.max_descriptors)
        digest = self._digest_for(reference, body, named)
        tags = tuple(dict.fromkeys(([] if is_digest(reference) else [reference]) + list(tags)))
        await self._refuse_moving_immutable(name, tags, body)
        await self.gc_runs.claim(self._relied_on(name, manifest, digest, tags))
        if not self.sparse:
            await self._require_references(name, manifest)

        await self.indexes.ensure_index_html()
        digest_key = layout.manifest(name, digest)
        existing = await run(self.storage.stat, digest_key)
        if existing is None or existing.size != len(body) or existing.content_type != manifest.media_type:
            await run(self.storage.put_bytes, digest_key, body, manifest.media_type, layout.MANIFEST_CACHE_IMMUTABLE)
        for tag in tags:
            await run(
                self.storage.put_bytes, layout.manifest(name, tag), body, manifest.media_type, layout.MUTABLE_CACHE
            )
        await self.indexes.refresh_tags(name)
        await self.indexes.add_to_catalog(name)
        if manifest.subject is not None:
            await self.indexes.add_referrer(name, manifest.subject.digest, manifest.descriptor(digest, len(body)))
        return PutResult(digest, manifest.subject.digest if manifest.subject else None, tags)

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
        keys = [layout.blob(name, d.digest) for d in manifest.blobs if not d.external]
        keys += [layout.manifest(name, d.digest) for d in manifest.children]
        found = await asyncio.gather(*(run(self.storage.stat, key) for key in dict.fromkeys(keys)))
        missing = [key.rsplit("/", 1)[1] for key, info in zip(dict.fromkeys(keys), found, strict=True) if not info]
        if missing:
            raise ManifestBlobUnknown(
                "manifest references content missing from the repository", detail={"missing": missing}
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
                await run(self.storage.delete, layout.manifest(name, tag))
            await run(self.storage.delete, layout.manifest(name, reference))
            await self._forget_referrer(name, stored)
        else:
            self._refuse_deleting_immutable(name, [reference])
            await run(self.storage.delete, layout.manifest(name, reference))
        await self.indexes.refresh_tags(name)

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
