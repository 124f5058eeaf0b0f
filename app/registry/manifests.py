"""Manifests: validate, publish in a pullable order, read back, delete.

Every way in (HTTP, `copy`, `sync`) comes through `Manifests.put`, so its checks are the registry's: the name,
each tag and digest (the grammar), the manifest, the references, the immutable tags. Publishing order keeps every
intermediate state of the bucket pullable: the manifest under its digest first, then the tags and then the tags
list; the catalog and the referrers index of its subject go alongside the tags, since no pull depends on them.
Every blob and child manifest it names must already be in the repository, with the size it declares (asked of
`app.registry.beliefs`, which answers from memory where its rule allows), so a tag never points at something
missing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial

from anyio.to_thread import run_sync as run

from app import layout
from app.errors import DigestInvalid, ManifestBlobUnknown, ManifestInvalid, ManifestUnknown, TagInvalid
from app.registry.beliefs import Beliefs, Kind
from app.registry.blob_summaries import BlobSummaries
from app.registry.documents import Documents
from app.registry.events import RegistryEvents
from app.registry.formats import Manifest, check_urls, parse_manifest
from app.registry.gc_runs import GcRuns
from app.registry.immutable import ImmutableTags, TagWrite, tag_digest
from app.registry.policy import refusal
from app.registry.publishing import Publishing
from app.registry.references import (
    algorithm_of,
    check_digest,
    check_name,
    check_tag,
    digest_of,
    is_digest,
    sha256_digest,
)
from app.storage import ObjectExists, ObjectInfo, Storage

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


def check_reference_of(reference: object) -> str:
    """The gate for a manifest reference from any way in: a tag or a digest of the grammar, nothing else."""
    if not isinstance(reference, str):
        raise TagInvalid("invalid tag", detail={"tag": repr(reference)[:300]})
    return check_digest(reference) if is_digest(reference) else check_tag(reference)


class Manifests:
    def __init__(
        self,
        storage: Storage,
        documents: Documents,
        beliefs: Beliefs,
        publishing: Publishing,
        summaries: BlobSummaries,
        immutable: ImmutableTags,
        gc_runs: GcRuns,
        events: RegistryEvents,
        max_descriptors: int | None = None,
        *,
        sparse: bool = False,
        urls_allowed: frozenset[str] = frozenset(),
    ) -> None:
        self.storage = storage
        self.documents = documents
        self.beliefs = beliefs
        self.publishing = publishing
        self.summaries = summaries  # rewritten once per push, after its blobs (app/registry/blob_summaries.py)
        self.immutable = immutable  # REGISTRY_POLICY: immutable tags
        self.gc_runs = gc_runs  # a running gc's candidates a push relies on are claimed
        self.events = events
        self.max_descriptors = max_descriptors
        self.sparse = sparse  # REGISTRY_SPARSE_MANIFESTS: accept manifests whose blobs or children are absent
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
        of its sha256. Nothing is written unless every check passes.
        """
        check_name(name)
        check_reference_of(reference)
        named_tags = [check_reference_of(tag) for tag in tags]
        if any(is_digest(tag) for tag in named_tags):
            raise TagInvalid("invalid tag", detail={"tag": next(tag for tag in named_tags if is_digest(tag))})
        tags = tuple(dict.fromkeys(([] if is_digest(reference) else [reference]) + named_tags))
        manifest = parse_manifest(body, content_type, max_descriptors=self.max_descriptors)
        check_urls(manifest, self.urls_allowed)
        digest = self._digest_for(reference, body, None if named is None else check_digest(named))
        writes = [TagWrite(name, tag, body, manifest.media_type, digest) for tag in tags]
        await self._refuse_moving_immutable(writes)
        async with self.gc_runs.relying():  # a gc run's acknowledgement waits for this push
            await self.gc_runs.claim(self._relied_on(name, manifest, digest, tags))
            await self._require_references(name, manifest)
            await self.documents.ensure_index_html()
            await self._write_by_digest(name, digest, body, manifest.media_type)
            self.summaries.flush(name)
            steps = [self.documents.add_to_catalog(name)]
            if tags:
                steps.append(self._write_tags(name, writes))
            if manifest.subject is not None:
                descriptor = manifest.descriptor(digest, len(body))
                steps.append(self.documents.add_referrer(name, manifest.subject.digest, descriptor))
            await asyncio.gather(*steps)
            for tag in tags or ("",):  # one event per tag stored, or the push by digest
                self.events.manifest_pushed(name, tag, digest, manifest.media_type, len(body))
            return PutResult(digest, manifest.subject.digest if manifest.subject else None, tags)

    async def _write_by_digest(self, name: str, digest: str, body: bytes, media_type: str) -> None:
        if not self.beliefs.vouched(name, Kind.MANIFEST, digest):
            key = layout.manifest(name, digest)
            write = partial(self.storage.put_bytes, if_absent=True)
            with contextlib.suppress(ObjectExists):  # the same bytes, pushed before
                await run(write, key, body, media_type, layout.MANIFEST_CACHE_IMMUTABLE)
        self.beliefs.wrote(name, Kind.MANIFEST, digest, len(body))

    async def _write_tags(self, name: str, writes: list[TagWrite]) -> None:
        """Write the tags (immutable ones create-only), then make sure the tags list names them."""
        async with self.documents.adding_tags(name, [write.tag for write in writes]):
            await asyncio.gather(*(self._write_tag(write) for write in writes))
            for write in writes:
                self.beliefs.wrote(name, Kind.MANIFEST, write.tag, len(write.body))

    async def _write_tag(self, write: TagWrite) -> None:
        if self.immutable.rule(write.name, write.tag) is not None:
            await self.immutable.write(write)
            return
        key = layout.manifest(write.name, write.tag)
        put = partial(self.storage.put_bytes, digest=write.digest)
        await run(put, key, write.body, write.media_type, layout.MUTABLE_CACHE)

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

    async def _refuse_moving_immutable(self, writes: list[TagWrite]) -> None:
        """An immutable tag may be pushed again with the same bytes as the same digest (a CI retry), never moved:
        refused before anything is written. Read only when a rule names the tag, so other pushes cost nothing
        more; the write itself is create-only (`ImmutableTags.write`), so a push racing this one cannot win."""
        for write in writes:
            if self.immutable.rule(write.name, write.tag) is not None:
                found = await self.immutable.read(write.name, write.tag)
                if found is not None:
                    found = (found[0], replace(found[1], digest=await self._resolved(write.name, *found)))
                self.immutable.refuse_moving(write.name, write.tag, found, write)

    @staticmethod
    def _relied_on(name: str, manifest: Manifest, digest: str, tags: Sequence[str]) -> list[str]:
        """The keys a push of `manifest` needs to stay: what it names, its digest key, its tags."""
        keys = [layout.blob(name, d.digest) for d in manifest.blobs if not d.external]
        keys += [layout.manifest(name, d.digest) for d in manifest.children]
        return keys + [layout.manifest(name, reference) for reference in (digest, *tags)]

    async def _require_references(self, name: str, manifest: Manifest) -> None:
        blobs = [d for d in manifest.blobs if not d.external]
        await self.publishing.settle(name, [d.digest for d in blobs])  # acknowledged to the client, on their way
        if self.sparse:
            return
        checked = await self.beliefs.check(name, blobs, manifest.children)
        if checked.missing and await self.publishing.settle_elsewhere(name, checked.missing):
            checked = await self.beliefs.check(name, blobs, manifest.children)
        if checked.missing:
            raise ManifestBlobUnknown(
                "manifest references content missing from the repository",
                detail={"missing": checked.missing[:MAX_REPORTED_MISSING], "count": len(checked.missing)},
            )
        if checked.wrong_sizes:
            digest, declared, stored = checked.wrong_sizes[0]
            raise ManifestInvalid(
                f"manifest declares {digest} as {declared} bytes; the repository holds {stored} bytes",
                detail={"digest": digest, "declared": declared, "stored": stored},
            )

    async def get(self, name: str, reference: str) -> StoredManifest:
        found = await run(self.storage.read_small, layout.manifest(name, reference))
        if found is None:
            raise ManifestUnknown("manifest unknown", detail={"name": name, "reference": reference})
        body, info = found
        digest = reference if is_digest(reference) else await self._resolved(name, body, info)
        return StoredManifest(body, info.content_type, digest, info.last_modified)

    async def _resolved(self, name: str, body: bytes, info: ObjectInfo) -> str:
        """The digest a tag resolves to: the one stored with it. A tag written before digests were stored with
        tags is its sha256, unless it was pushed named by its sha512 (then only that key exists: looked for only
        in a manifest naming sha512 content, so other tags cost no extra request)."""
        if info.digest is None and b'"sha512:' in body:
            sha512 = digest_of(body, "sha512")
            if await run(self.storage.stat, layout.manifest(name, sha512)) is not None:
                return sha512
        return tag_digest(body, info)

    async def delete(self, name: str, reference: str) -> None:
        """Delete a tag, or a manifest by digest together with every tag pointing at it; never what an immutable
        tag reaches."""
        stored = await self.get(name, reference)
        if is_digest(reference):
            await self.immutable.refuse_deleting(name, [reference], "manifest")
            tags = await run(self._tags_pointing_at, name, reference)
            for tag in tags:
                await self._delete(name, tag)
            await self._delete(name, reference)
            await self._forget_referrer(name, stored)
            self.events.manifest_deleted(name, reference)
        else:
            rule = self.immutable.rule(name, reference)
            if rule is not None:
                raise refusal(rule, name, reference, "deleted")
            await self._delete(name, reference)
            self.events.tag_deleted(name, reference)
        await self.documents.rebuild_tags(name)

    async def _delete(self, name: str, reference: str) -> None:
        self.beliefs.forget(name, Kind.MANIFEST, reference)
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
            await self.documents.remove_referrer(name, manifest.subject.digest, stored.digest)
