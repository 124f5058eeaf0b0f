"""`storj-registry fsck [--repair]`: check a bucket against the invariants of the static layout.

Invariants: every manifest (by tag or digest) parses, is stored with its media type as Content-Type and the
right Cache-Control, hashes to its digest key; every tag has its manifest under its digest too; everything a
manifest references (blobs, index children) is in the repository; tags/list, _catalog and the referrers indexes
(with the entries they are rebuilt from) match the keys; v2/index.html exists; the catalog page at the root is
this version's, without assets an older version left.

Each problem is one line on stdout, `PROBLEM <code> <key> <detail>`, and `REPAIRED <code> <key>` once fixed.
`--repair` fixes what the bucket itself can tell: derived documents and entries, object metadata, a tag's
missing digest key (from the tag's own bytes). It never invents a blob or a manifest it does not have. A repair
that another object's path blocks (a filesystem tree from before names were checked for overlaps) is reported as
`UNREPAIRED <code> <key> <reason>` and left.

With `--blobs` it also reads every blob object and hashes it again (`app.tools.blob_scan`): a blob whose bytes do
not hash to its digest, or fewer bytes than its manifests declare, is reported with the repositories whose
manifests use it; `--repair` moves it to `v2/_quarantine/` (`layout.quarantined`), so the next push of that digest
writes it again (blob writes are create-only) and pulls meanwhile fail with "blob unknown", not a digest error.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TextIO

from app import layout
from app.registry import blob_summaries, catalog_page, documents
from app.registry.beliefs import LISTING_PAGE
from app.registry.formats import INDEXES
from app.registry.gc_runs import STALE_SECONDS
from app.storage import KeyBlocked, Storage
from app.tools.blob_scan import BlobRead, blob_targets, meter_for, read_blobs
from app.tools.gc_run import RunTiming, abandon, announced_run
from app.tools.inventory import (
    Inventory,
    Progress,
    Repository,
    StoredManifest,
    read_manifests,
    take_inventory,
)

Repair = Callable[[], None]
MAX_USERS_SAID = 5  # manifests named in a damaged blob's line


@dataclass(frozen=True)
class Problem:
    code: str
    key: str
    detail: str
    repair: Repair | None = field(default=None, compare=False)

    def line(self) -> str:
        return f"PROBLEM {self.code} {self.key} {self.detail}"


@dataclass
class Report:
    keys: int = 0
    repositories: int = 0
    manifests: int = 0  # by digest, as gc counts them
    tags: int = 0
    blobs_read: int = 0
    bytes_read: int = 0
    problems: list[Problem] = field(default_factory=list)
    repaired: int = 0

    @property
    def left(self) -> int:
        return len(self.problems) - self.repaired

    def summary(self) -> str:
        read = f", {self.blobs_read} blobs read ({self.bytes_read} bytes)" if self.blobs_read else ""
        return (
            f"{self.keys} keys, {self.repositories} repositories, {self.manifests} manifests ({self.tags} tags)"
            f"{read} checked: {len(self.problems)} problems, {self.repaired} repaired, {self.left} left"
        )


# Repairs that remove what a service replica may believe is there (a blob, a repository in the catalog): they are
# made during an announced run (app/registry/gc_runs.py), so that every replica stops relying on memory first.
ENDS_BELIEFS = frozenset({"short-blob", "blob-digest-mismatch", "stale-catalog-entry"})


def fsck(
    storage: Storage,
    *,
    repair: bool = False,
    blobs: bool = False,
    out: TextIO | None = None,
    progress: Progress | None = None,
    announce_seconds: float = 0.0,
) -> Report:
    """Check (and with `repair`, fix) the store. A repair that removes something a replica may believe is there is
    made inside an announced gc run, held `announce_seconds` first (longer than the replicas' watch interval)."""
    progress = progress or Progress("fsck")
    out = out or sys.stdout
    inventory = take_inventory(storage, progress)
    report = Report(
        keys=inventory.keys,
        repositories=len(inventory.repositories),
        manifests=inventory.manifests,
        tags=inventory.tags,
    )
    checker = Checker(storage, inventory, report if blobs else None)
    for problem in checker.problems(progress):
        report.problems.append(problem)
        print(problem.line(), file=out, flush=True)
    if repair and any(problem.code in ENDS_BELIEFS for problem in report.problems if problem.repair):
        with announced_run(storage, RunTiming(settle_seconds=announce_seconds, mark_seconds=0), progress):
            make_repairs(report, out)
    elif repair:
        make_repairs(report, out)
    if inventory.quarantined:
        progress.say(
            f"{len(inventory.quarantined)} blob(s) in {layout.QUARANTINE}, moved aside by --repair: delete them"
        )
    progress.say(report.summary())
    return report


def make_repairs(report: Report, out: TextIO) -> None:
    for problem in report.problems:
        if problem.repair is None:
            continue
        try:
            problem.repair()
        except KeyBlocked as exc:  # another object's path is in the way: an operator must choose which goes
            print(f"UNREPAIRED {problem.code} {problem.key} {exc}", file=out, flush=True)
            continue
        report.repaired += 1
        print(f"REPAIRED {problem.code} {problem.key}", file=out, flush=True)


class Checker:
    def __init__(self, storage: Storage, inventory: Inventory, reading: Report | None = None) -> None:
        """`reading`: read every blob too (`--blobs`), counting what was read into that report."""
        self.storage = storage
        self.inventory = inventory
        self.reading = reading
        self.users: dict[tuple[str, str], set[str]] = {}  # (repository, blob) -> the manifests that reference it
        self.declared: dict[tuple[str, str], int] = {}  # (repository, blob) -> the size its manifests give

    def problems(self, progress: Progress) -> Iterator[Problem]:
        for repository in self.inventory.sorted_repositories():
            yield from self.check_repository(repository, progress)
        if self.reading is not None:
            yield from self.check_blob_contents(self.reading)
        yield from self.check_catalog()
        yield from self.check_gc_run()
        yield from self.check_root()
        yield from self.check_page()

    # one repository -------------------------------------------------------------------------------------

    def check_repository(self, repository: Repository, progress: Progress) -> Iterator[Problem]:
        referrers: dict[str, dict[str, dict[str, Any]]] = {}  # subject -> referrer digest -> descriptor
        for stored in read_manifests(self.storage, repository, progress):
            yield from self.check_manifest(repository, stored)
            self.note_blob_uses(repository.name, stored)
            if stored.intact and stored.manifest and stored.manifest.subject:
                descriptor = stored.manifest.descriptor(stored.digest, len(stored.body)).to_json()
                referrers.setdefault(stored.manifest.subject.digest, {})[stored.digest] = descriptor
        yield from self.check_referrers(repository, referrers)
        yield from self.check_tags_list(repository)
        yield from self.check_blob_summary(repository)

    def check_manifest(self, repository: Repository, stored: StoredManifest) -> Iterator[Problem]:
        if stored.by_digest and stored.digest != stored.reference:
            yield Problem("digest-mismatch", stored.key, f"content hashes to {stored.digest}")
            return
        if stored.manifest is None:
            yield Problem("manifest-invalid", stored.key, stored.error or "does not parse")
            return
        yield from self.check_metadata(stored)
        if not stored.by_digest and stored.digest not in repository.digests:
            digest_key = layout.manifest(repository.name, stored.digest)
            cache = layout.MANIFEST_CACHE_IMMUTABLE
            restore = partial(self.storage.put_bytes, digest_key, stored.body, stored.manifest.media_type, cache)
            yield Problem("tag-without-digest", stored.key, f"{digest_key} is missing", restore)
        if stored.by_digest or stored.digest not in repository.digests:  # else checked with its digest key
            yield from self.check_references(repository, stored)

    def check_metadata(self, stored: StoredManifest) -> Iterator[Problem]:
        """Content-Type is what pullers take the media type from; Cache-Control keeps tags fresh in caches."""
        assert stored.manifest is not None
        media_type = stored.manifest.media_type
        cache = layout.MANIFEST_CACHE_IMMUTABLE if stored.by_digest else layout.MUTABLE_CACHE
        rewrite = partial(self.storage.put_bytes, stored.key, stored.body, media_type, cache)
        if stored.info.content_type != media_type:
            detail = f"{stored.info.content_type!r}, not {media_type!r}"
            yield Problem("wrong-content-type", stored.key, detail, rewrite)
        elif stored.info.cache_control != cache:
            yield Problem("wrong-cache-control", stored.key, f"{stored.info.cache_control!r}, not {cache!r}", rewrite)

    def check_references(self, repository: Repository, stored: StoredManifest) -> Iterator[Problem]:
        assert stored.manifest is not None
        for blob in stored.manifest.blobs:
            if not blob.external and blob.digest not in repository.blobs:
                missing = layout.blob(repository.name, blob.digest)
                yield Problem("missing-blob", missing, f"referenced by {stored.key}")
        for child in stored.manifest.children:
            if child.digest not in repository.digests:
                missing = layout.manifest(repository.name, child.digest)
                kind = "index" if stored.manifest.media_type in INDEXES else "manifest"
                yield Problem("missing-manifest", missing, f"child of the {kind} {stored.key}")

    def check_referrers(
        self, repository: Repository, expected: dict[str, dict[str, dict[str, Any]]]
    ) -> Iterator[Problem]:
        name = repository.name
        for subject in sorted(set(expected) | repository.referrers_indexes | set(repository.referrer_entries)):
            wanted, present = expected.get(subject, {}), repository.referrer_entries.get(subject, set())
            for digest in sorted(set(wanted) - present):
                entry = layout.referrer_entry(name, subject, digest)
                body = json.dumps(wanted[digest]).encode()
                write = partial(self.storage.put_bytes, entry, body, layout.JSON, layout.MUTABLE_CACHE)
                yield Problem("missing-referrer-entry", entry, f"{digest} has subject {subject}", write)
            for digest in sorted(present - set(wanted)):
                entry = layout.referrer_entry(name, subject, digest)
                delete = partial(self.storage.delete, entry)
                yield Problem("stale-referrer-entry", entry, f"no manifest {digest} with subject {subject}", delete)
            document = [wanted[digest] for digest in sorted(wanted)]
            key = layout.referrers(name, subject)
            rebuild = partial(documents.rebuild, self.storage, documents.referrers_kind(self.storage, name, subject))
            yield from self.check_document(key, documents.referrers_document(document), layout.OCI_INDEX, rebuild)

    def check_tags_list(self, repository: Repository) -> Iterator[Problem]:
        if not repository.published:
            return
        name = repository.name
        rebuild = partial(documents.rebuild, self.storage, documents.tags_kind(self.storage, name))
        expected = documents.tags_document(name, sorted(repository.tags))
        yield from self.check_document(layout.tags_list(name), expected, layout.JSON, rebuild)

    def check_blob_summary(self, repository: Repository) -> Iterator[Problem]:
        """A repository too big to list in one page has a summary naming every blob it holds (the prefixes of
        blobs removed since may stay: they only cost a HEAD)."""
        if len(repository.blobs) < LISTING_PAGE:
            return
        key = layout.blob_summary(repository.name)
        found = self.storage.read_small(key)
        rebuild = partial(blob_summaries.rebuild, self.storage, repository.name)
        if found is None:
            yield Problem("missing-document", key, "a repository this big has a summary of its blobs", rebuild)
            return
        summary = blob_summaries.Summary.decode(found[0])
        lacking = [digest for digest in repository.blobs if summary is None or digest not in summary]
        if summary is None or lacking:
            detail = "not a summary" if summary is None else f"lacks {len(lacking)} of its blobs"
            yield Problem("stale-document", key, detail, rebuild)

    # blob contents (--blobs) ----------------------------------------------------------------------------

    def note_blob_uses(self, name: str, stored: StoredManifest) -> None:
        """Which manifests (by tag, or by digest) of `name` a pull of its blobs serves."""
        if not stored.intact or stored.manifest is None:
            return
        label = f"{name}@{stored.reference[:19]}" if stored.by_digest else f"{name}:{stored.reference}"
        for blob in stored.manifest.blobs:
            self.users.setdefault((name, blob.digest), set()).add(label)
            self.declared.setdefault((name, blob.digest), blob.size)

    def check_blob_contents(self, report: Report) -> Iterator[Problem]:
        targets = blob_targets(self.storage, self.inventory)
        meter = meter_for("fsck", targets)
        try:
            for found in read_blobs(self.storage, targets, meter):
                report.blobs_read += 1
                report.bytes_read += found.size
                problem = self.blob_problem(found)
                if problem is not None:
                    yield problem
        finally:
            meter.close()

    def blob_problem(self, found: BlobRead) -> Problem | None:
        target = found.target
        declared = self.declared.get((target.name, target.digest))
        users = sorted(self.users.get((target.name, target.digest), ()))
        more = f" and {len(users) - MAX_USERS_SAID} more" if len(users) > MAX_USERS_SAID else ""
        used = f"pulls of {', '.join(users[:MAX_USERS_SAID])}{more} fail" if users else "no manifest uses it"
        move = partial(quarantine, self.storage, target.key)
        if declared is not None and found.size < declared:
            return Problem(
                "short-blob", target.key, f"{found.size} of the {declared} bytes its manifests give; {used}", move
            )
        if not found.intact:
            return Problem(
                "blob-digest-mismatch", target.key, f"its {found.size} bytes hash to {found.digest}; {used}", move
            )
        return None

    # bucket-wide ----------------------------------------------------------------------------------------

    def check_catalog(self) -> Iterator[Problem]:
        published = {repository.name for repository in self.inventory.repositories.values() if repository.published}
        if not (published or self.inventory.catalog or self.inventory.catalog_entries):
            return  # nothing pushed yet
        for name in sorted(published - self.inventory.catalog_entries):
            entry = layout.catalog_entry(name)
            write = partial(self.storage.put_bytes, entry, b"", layout.OCTET_STREAM, layout.MUTABLE_CACHE)
            yield Problem("missing-catalog-entry", entry, f"repository {name} has manifests", write)
        for name in sorted(self.inventory.catalog_entries - published):
            entry = layout.catalog_entry(name)
            yield Problem(
                "stale-catalog-entry", entry, f"repository {name} has no manifests", partial(self.storage.delete, entry)
            )
        rebuild = partial(documents.rebuild, self.storage, documents.catalog_kind(self.storage))
        yield from self.check_document(
            layout.CATALOG, documents.catalog_document(sorted(published)), layout.JSON, rebuild
        )

    def check_gc_run(self) -> Iterator[Problem]:
        """An announced gc run whose heartbeat stopped: its gc died, and replicas trust no memory meanwhile."""
        found = self.storage.read_small(layout.GC_RUN)
        if found is None:
            return
        silence = time.time() - (found[1].last_modified or 0)
        if silence > STALE_SECONDS:
            detail = f"its heartbeat stopped {silence:.0f}s ago (the gc died); the next run takes it over"
            yield Problem("stale-gc-run", layout.GC_RUN, detail, partial(abandon, self.storage))

    def check_root(self) -> Iterator[Problem]:
        write = partial(self.storage.put_bytes, layout.INDEX_HTML, b"", layout.HTML, layout.MUTABLE_CACHE)
        info = self.storage.stat(layout.INDEX_HTML)
        if info is None and self.inventory.keys:
            yield Problem("missing-index-html", layout.INDEX_HTML, "the /v2/ ping of a static server needs it", write)
        elif info is not None and info.content_type != layout.HTML:
            yield Problem("wrong-content-type", layout.INDEX_HTML, f"{info.content_type!r}, not {layout.HTML!r}", write)
        for digest in sorted(self.inventory.blob_records):
            if not self.inventory.holders(digest):
                record = layout.blob_location(digest)
                delete = partial(self.storage.delete, record)
                yield Problem("stale-blob-record", record, "no repository holds this blob", delete)
        for key in sorted(self.inventory.unexpected):
            yield Problem("unexpected-key", key, "not part of the registry layout")

    def check_page(self) -> Iterator[Problem]:
        """The catalog page: this version's bytes and metadata (assets first, as written), no stale asset."""
        if not self.inventory.keys:
            return  # an unused bucket: the service writes the page when it starts
        current = catalog_page.page_objects()
        for item in current:
            found = self.storage.read_small(item.key)
            write = partial(self.storage.put_bytes, item.key, item.body, item.content_type, item.cache_control)
            if found is None:
                yield Problem("missing-page", item.key, "part of the catalog page at the bucket's root", write)
            elif not item.matches(*found):
                yield Problem("stale-page", item.key, f"not the page of version {catalog_page.version()}", write)
        stored_assets = set(self.storage.list(layout.PAGE_ASSETS))  # outside v2/: not in the inventory
        for key in sorted(stored_assets - {item.key for item in current}):
            delete = partial(self.storage.delete, key)
            yield Problem("stale-page-asset", key, "an older version's page file, named by no page", delete)

    def check_document(self, key: str, expected: bytes, content_type: str, rebuild: Repair) -> Iterator[Problem]:
        """A derived JSON document: present, with the right type and cache policy, saying what `expected` says."""
        found = self.storage.read_small(key)
        if found is None:
            yield Problem("missing-document", key, "derived document absent", rebuild)
            return
        body, info = found
        try:
            same = json.loads(body) == json.loads(expected)
        except ValueError:
            same = False
        if not same:
            yield Problem("stale-document", key, "does not match the keys it is derived from", rebuild)
        elif info.content_type != content_type or info.cache_control != layout.MUTABLE_CACHE:
            detail = f"{info.content_type!r} / {info.cache_control!r}, not {content_type!r} / {layout.MUTABLE_CACHE!r}"
            yield Problem("wrong-content-type", key, detail, rebuild)


def quarantine(storage: Storage, key: str) -> None:
    """Move a damaged blob aside (a server-side copy, then the delete): its key is free for the next push."""
    storage.copy(key, layout.quarantined(key))
    storage.delete(key)
