"""What a bucket holds, from one listing: the shared ground of fsck and gc.

A listing names every key (1000 per page, in no particular order on Storj) but nothing else, so the inventory
keeps sets per repository and the tools sort what they walk. Keys are recognised by patterns built from
`app.layout` itself, which stays the only place that spells them.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import TextIO

from app import layout
from app.errors import ManifestInvalid
from app.registry.formats import Manifest, parse_manifest
from app.registry.references import DIGEST_RE, TAG_RE, algorithm_of, digest_of, is_name
from app.registry.staging import UPLOAD_ID_RE
from app.storage import ObjectInfo, Storage

PROGRESS_EVERY = 1000
READ_THREADS = 16
READ_AHEAD = 256  # manifests held at once, at most


def _pattern(template: str, **groups: str) -> re.Pattern[str]:
    """A regex for the keys `app.layout` spells, with `@field@` placeholders turned into named groups."""
    regex = re.escape(template)
    for placeholder, group in groups.items():
        regex = regex.replace(f"@{placeholder}@", f"(?P<{placeholder}>{group})")
    return re.compile(regex)


_NAME, _DIGEST, _REF = r".+", DIGEST_RE.pattern, r"[^/]+"
KEY_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("blob", _pattern(layout.blob("@name@", "@digest@"), name=_NAME, digest=_DIGEST)),
    ("manifest", _pattern(layout.manifest("@name@", "@ref@"), name=_NAME, ref=_REF)),
    ("tags_list", _pattern(layout.tags_list("@name@"), name=_NAME)),
    ("referrers", _pattern(layout.referrers("@name@", "@subject@"), name=_NAME, subject=_DIGEST)),
    (
        "referrer_entry",
        _pattern(layout.referrer_entry("@name@", "@subject@", "@digest@"), name=_NAME, subject=_DIGEST, digest=_DIGEST),
    ),
    ("catalog_entry", _pattern(layout.catalog_entry("@name@"), name=_NAME)),
    ("blob_record", _pattern(layout.blob_location("@digest@"), digest=_DIGEST)),
    ("staged_upload", _pattern(layout.staged_upload("@id@"), id=UPLOAD_ID_RE.pattern)),
    ("gc_state", re.compile(re.escape(layout.GC_STATE) + ".+")),  # a gc run's own (app/tools/gc_run.py)
    ("document_version", re.compile(re.escape(layout.VERSIONS) + ".+")),  # app/registry/versions.py
    ("multipart_record", re.compile(re.escape(layout.MULTIPART_RECORDS) + ".+")),  # gc reads them itself
    ("blob_summary", _pattern(layout.blob_summary("@name@"), name=_NAME)),  # fsck reads them itself
    ("quarantined", re.compile(re.escape(layout.QUARANTINE) + "(?P<key>.+)")),  # moved aside by fsck --repair
]


@dataclass
class Repository:
    name: str
    blobs: set[str] = field(default_factory=set)
    digests: set[str] = field(default_factory=set)  # manifests stored under their digest
    tags: set[str] = field(default_factory=set)
    has_tags_list: bool = False
    referrers_indexes: set[str] = field(default_factory=set)  # subjects with an index
    referrer_entries: dict[str, set[str]] = field(default_factory=dict)  # subject -> referrer digests

    @property
    def published(self) -> bool:
        """Known to clients: it has manifests, or had them (a tags list stays when they are deleted)."""
        return bool(self.digests or self.tags or self.has_tags_list)


@dataclass
class Inventory:
    repositories: dict[str, Repository] = field(default_factory=dict)
    catalog: bool = False
    catalog_entries: set[str] = field(default_factory=set)
    blob_records: set[str] = field(default_factory=set)
    staged_uploads: set[str] = field(default_factory=set)  # a commit in progress, or one a crash interrupted
    quarantined: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    keys: int = 0

    @property
    def manifests(self) -> int:
        """Manifests are counted by their digest keys, by fsck and gc alike: a tag is another name for one."""
        return sum(len(repository.digests) for repository in self.repositories.values())

    @property
    def tags(self) -> int:
        return sum(len(repository.tags) for repository in self.repositories.values())

    def repository(self, name: str) -> Repository:
        return self.repositories.setdefault(name, Repository(name))

    def sorted_repositories(self) -> list[Repository]:
        return [self.repositories[name] for name in sorted(self.repositories)]

    def holders(self, digest: str) -> list[str]:
        return sorted(name for name, repository in self.repositories.items() if digest in repository.blobs)

    def add(self, key: str) -> None:
        self.keys += 1
        if key == layout.INDEX_HTML:
            return  # fsck checks it with its metadata, on its own
        if key == layout.CATALOG:
            self.catalog = True
        elif not self._add_patterned(key):
            self.unexpected.append(key)

    def _add_patterned(self, key: str) -> bool:
        for kind, pattern in KEY_PATTERNS:
            match = pattern.fullmatch(key)
            if match and _valid(match):
                _ADDERS[kind](self, match.groupdict())
                return True
        return False


def _valid(match: re.Match[str]) -> bool:
    found = match.groupdict()
    name_ok = "name" not in found or is_name(found["name"])
    ref_ok = "ref" not in found or bool(DIGEST_RE.fullmatch(found["ref"]) or TAG_RE.fullmatch(found["ref"]))
    return name_ok and ref_ok


def _add_manifest(inventory: Inventory, found: dict[str, str]) -> None:
    repository = inventory.repository(found["name"])
    (repository.digests if DIGEST_RE.fullmatch(found["ref"]) else repository.tags).add(found["ref"])


def _add_referrer_entry(inventory: Inventory, found: dict[str, str]) -> None:
    entries = inventory.repository(found["name"]).referrer_entries
    entries.setdefault(found["subject"], set()).add(found["digest"])


_ADDERS: dict[str, Callable[[Inventory, dict[str, str]], None]] = {
    "blob": lambda inv, f: inv.repository(f["name"]).blobs.add(f["digest"]),
    "manifest": _add_manifest,
    "tags_list": lambda inv, f: setattr(inv.repository(f["name"]), "has_tags_list", True),
    "referrers": lambda inv, f: inv.repository(f["name"]).referrers_indexes.add(f["subject"]),
    "referrer_entry": _add_referrer_entry,
    "catalog_entry": lambda inv, f: inv.catalog_entries.add(f["name"]),
    "blob_record": lambda inv, f: inv.blob_records.add(f["digest"]),
    "staged_upload": lambda inv, f: inv.staged_uploads.add(f["id"]),
    "gc_state": lambda inv, f: None,
    "document_version": lambda inv, f: None,
    "multipart_record": lambda inv, f: None,
    "blob_summary": lambda inv, f: None,
    "quarantined": lambda inv, f: inv.quarantined.append(layout.QUARANTINE + f["key"]),
}


class Progress:
    """Counts on stderr every `every` items, so an operator sees a long walk move."""

    def __init__(self, tool: str, stream: TextIO | None = None, every: int = PROGRESS_EVERY) -> None:
        self.tool = tool
        self.stream = stream
        self.every = every

    def tick(self, done: int, what: str, total: int | None = None) -> None:
        if done % self.every == 0:
            self.say(f"{done}/{total} {what}" if total is not None else f"{done} {what}")

    def say(self, message: str) -> None:
        print(f"{self.tool}: {message}", file=self.stream or sys.stderr, flush=True)


def take_inventory(storage: Storage, progress: Progress) -> Inventory:
    inventory = Inventory()
    for key in storage.list("v2/"):
        inventory.add(key)
        progress.tick(inventory.keys, "keys listed")
    progress.say(f"{inventory.keys} keys listed, {len(inventory.repositories)} repositories")
    return inventory


@dataclass(frozen=True)
class StoredManifest:
    """A manifest object as found: its bytes' digest, what it parses to (None: it does not), its metadata."""

    key: str
    reference: str
    body: bytes
    info: ObjectInfo
    digest: str
    manifest: Manifest | None
    error: str | None

    @property
    def by_digest(self) -> bool:
        return DIGEST_RE.fullmatch(self.reference) is not None

    @property
    def intact(self) -> bool:
        """Parsed, and (under a digest key) hashing to its key."""
        return self.manifest is not None and (not self.by_digest or self.digest == self.reference)


def read_manifest(
    storage: Storage, name: str, reference: str, digests: frozenset[str] | set[str] = frozenset()
) -> StoredManifest | None:
    """Read and parse one manifest object; None when it vanished since the listing.

    A tag's manifest is named by its sha256, or by its sha512 when it was pushed named so (`digests`, the
    repository's digest keys, then hold that one and not the sha256).
    """
    key = layout.manifest(name, reference)
    found = storage.read_small(key)
    if found is None:
        return None
    body, info = found
    if DIGEST_RE.fullmatch(reference):
        algorithm = algorithm_of(reference)
    elif digest_of(body) not in digests and digest_of(body, "sha512") in digests:
        algorithm = "sha512"
    else:
        algorithm = "sha256"
    try:
        manifest, error = parse_stored(body, info.content_type), None
    except ManifestInvalid as exc:
        manifest, error = None, exc.message
    return StoredManifest(key, reference, body, info, digest_of(body, algorithm), manifest, error)


def parse_stored(body: bytes, content_type: str) -> Manifest:
    """Parse by the body's own `mediaType`; the stored Content-Type counts only when the body has none."""
    try:
        return parse_manifest(body, None)
    except ManifestInvalid:
        return parse_manifest(body, content_type)


def read_manifests(storage: Storage, repository: Repository, progress: Progress) -> Iterator[StoredManifest]:
    """Every manifest of a repository, digests first, then tags, each in order.

    Read READ_AHEAD at a time in parallel: one GET each, and on Storj each GET is a round trip of tens of ms.
    """
    references = sorted(repository.digests) + sorted(repository.tags)
    read = partial(read_manifest, storage, repository.name, digests=repository.digests)
    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        for start in range(0, len(references), READ_AHEAD):
            for done, stored in enumerate(pool.map(read, references[start : start + READ_AHEAD]), start=start + 1):
                if stored is not None:
                    yield stored
                progress.tick(done, f"manifests read in {repository.name}", len(references))


def relist_manifests(storage: Storage, name: str) -> Repository:
    """A repository's manifest keys as they are now (for a second look after a change)."""
    repository = Repository(name)
    for reference in storage.list_children(layout.manifests_dir(name)):
        if DIGEST_RE.fullmatch(reference):
            repository.digests.add(reference)
        elif TAG_RE.fullmatch(reference):
            repository.tags.add(reference)
    return repository
