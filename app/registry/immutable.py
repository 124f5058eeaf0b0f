"""Immutable tags (the policy file's `immutable` rules): once pushed, a matching tag never points elsewhere.

Enforced by the store, not by a read before a write: a matching tag is written create-only (`If-None-Match: *`),
and when it exists it is compared (the same bytes and the same digest, algorithm included, or the push is
refused). Of concurrent pushes to a new immutable tag exactly one lands; the others are refused unless they push
the same manifest. What an immutable tag reaches (its manifest, an index's children, their blobs) cannot be
deleted through the API.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from anyio.to_thread import run_sync as run

from app import layout
from app.errors import Denied
from app.registry.documents import list_tags
from app.registry.formats import parse_manifest
from app.registry.policy import ImmutableRule, PolicyFile, refusal
from app.registry.references import digest_of, sha256_digest
from app.storage import ObjectExists, ObjectInfo, Storage

MAX_PROTECTED_MANIFESTS = 10_000  # a bound on the walk from a repository's immutable tags (deletes only)


@dataclass(frozen=True)
class TagWrite:
    """A tag to write for a push: the manifest's bytes, its media type and the digest it is pushed as."""

    name: str
    tag: str
    body: bytes
    media_type: str
    digest: str


def tag_digest(body: bytes, info: ObjectInfo) -> str:
    """The digest a stored tag resolves to: the one stored with it, else its sha256 (tags written before the
    digest was stored with them, and pushed by sha512, are found by the caller from the sha512 key)."""
    return info.digest or sha256_digest(body)


class ImmutableTags:
    def __init__(self, storage: Storage, policy: PolicyFile) -> None:
        self.storage = storage
        self.policy = policy

    def rule(self, name: str, tag: str) -> ImmutableRule | None:
        return self.policy.current().immutable_rule(name, tag)

    def refuse_moving(self, name: str, tag: str, found: tuple[bytes, ObjectInfo] | None, write: TagWrite) -> None:
        """Before anything is written: an existing immutable tag must already hold these bytes, as this digest."""
        rule = self.rule(name, tag)
        if rule is not None and found is not None and not _same(found, write):
            raise refusal(rule, name, tag, "moved")

    async def read(self, name: str, tag: str) -> tuple[bytes, ObjectInfo] | None:
        return await run(self.storage.read_small, layout.manifest(name, tag))

    async def write(self, write: TagWrite) -> None:
        """Write an immutable tag create-only; losing the race to the same manifest is fine, to another is not."""
        rule = self.rule(write.name, write.tag)
        assert rule is not None
        key = layout.manifest(write.name, write.tag)
        try:
            await run(_put_create_only, self.storage, key, write)
        except ObjectExists:
            found = await self.read(write.name, write.tag)
            if found is None or not _same(found, write):
                raise refusal(rule, write.name, write.tag, "moved") from None

    async def refuse_deleting(self, name: str, digests: Sequence[str], what: str) -> None:
        """Refuse (DENIED) deleting content an immutable tag of `name` reaches, or an immutable tag itself."""
        policy = self.policy.current()
        if not any(rule.matches_repository(name) for rule in policy.immutable):
            return
        protected = await run(self._reached, name)
        for digest in digests:
            if digest in protected:
                tag, rule = protected[digest]
                raise Denied(
                    f"{what} {digest} cannot be deleted: tag {name}:{tag} is immutable ({rule.describe()}) "
                    "and reaches it",
                    detail={"name": name, "digest": digest, "tag": tag, "rule": f"immutable[{rule.number}]"},
                )

    def _reached(self, name: str) -> dict[str, tuple[str, ImmutableRule]]:
        """Every digest (manifests, children, blobs) an immutable tag of `name` reaches, with the tag and rule."""
        policy = self.policy.current()
        reached: dict[str, tuple[str, ImmutableRule]] = {}
        for tag in list_tags(self.storage, name):
            rule = policy.immutable_rule(name, tag)
            found = self.storage.read_small(layout.manifest(name, tag)) if rule else None
            if rule is None or found is None:
                continue
            pending = [(found[0], found[1].content_type, tag_digest(*found))]
            while pending and len(reached) < MAX_PROTECTED_MANIFESTS:
                body, media_type, digest = pending.pop()
                reached.setdefault(digest, (tag, rule))
                reached.setdefault(digest_of(body, "sha512"), (tag, rule))
                manifest = parse_manifest(body, media_type)
                for blob in manifest.blobs:
                    reached.setdefault(blob.digest, (tag, rule))
                for child in manifest.children:
                    child_found = self.storage.read_small(layout.manifest(name, child.digest))
                    if child_found is not None and child.digest not in reached:
                        pending.append((child_found[0], child_found[1].content_type, child.digest))
        return reached


def _same(found: tuple[bytes, ObjectInfo], write: TagWrite) -> bool:
    """The stored tag holds these bytes, named by this digest (a sha512 push does not re-name a sha256 tag)."""
    body, info = found
    return body == write.body and (info.digest or sha256_digest(body)) == write.digest


def _put_create_only(storage: Storage, key: str, write: TagWrite) -> None:
    storage.put_bytes(key, write.body, write.media_type, layout.MUTABLE_CACHE, if_absent=True, digest=write.digest)
