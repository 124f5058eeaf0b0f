"""`storj-registry gc [--delete] [--grace-seconds N]`: find (and delete) what nothing references, per repository.

A manifest is kept when a tag reaches it: directly, as a child of a kept index, or as a referrer (its `subject`)
of a kept manifest. A blob is kept when a kept manifest names it. The rest is garbage, except objects modified
within the grace period: a push in progress has uploaded blobs, or a manifest by digest, that nothing references
yet. Without `--delete` it only reports (`would-delete <key>`). With it, manifests go first; then the repository
is listed and read again, so that a manifest pushed meanwhile keeps its blobs (and a tag pushed meanwhile onto a
deleted manifest gets its digest key back from its own bytes); then the blobs go.

A repository with a manifest that cannot be read or does not match its digest is left alone: what it
references is unknown. `fsck` names the culprit. Objects a blob commit left at its staging key
(`layout.staged_upload`, when the service died between completing and copying them) go too, after the grace,
and so do multipart uploads nobody finished (their session lost with its staging volume): they are invisible,
but the store keeps their parts.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import TextIO

from app import layout
from app.registry import documents
from app.registry.policy import Policy
from app.registry.references import digest_of
from app.storage import Storage
from app.storage.base import MultipartStorage
from app.tools.gc_run import LiveParticipants, RunTiming, announced_run
from app.tools.inventory import (
    Inventory,
    Progress,
    Repository,
    StoredManifest,
    read_manifests,
    relist_manifests,
    take_inventory,
)
from app.tools.retention import judge_tags

DEFAULT_GRACE_SECONDS = 24 * 3600
CLOCK_SKEW_SECONDS = 60.0  # between the store's clock (a multipart upload's start) and a participant's


@dataclass(frozen=True)
class Removal:
    """A manifest or blob gc deleted (what `storj-registry gc` announces as events)."""

    repository: str
    digest: str
    media_type: str


@dataclass
class Report:
    keys: int = 0  # every key of the store (0: nothing was ever pushed there)
    repositories: int = 0
    manifests: int = 0
    blobs: int = 0
    garbage: int = 0
    recent: int = 0
    deleted: int = 0
    skipped: list[str] = field(default_factory=list)
    removed: list[Removal] = field(default_factory=list)

    def summary(self, delete: bool) -> str:
        outcome = f"{self.deleted} deleted" if delete else f"{self.garbage - self.recent} would be deleted (dry run)"
        skipped = f"; {len(self.skipped)} repositories left alone (unreadable manifests)" if self.skipped else ""
        return (
            f"{self.repositories} repositories, {self.manifests} manifests, {self.blobs} blobs: "
            f"{self.garbage} unreferenced, {self.recent} kept as recent, {outcome}{skipped}"
        )


@dataclass
class Reachability:
    """What a repository's tags keep alive, and the manifests read on the way."""

    manifests: set[str]
    blobs: set[str]
    by_digest: dict[str, StoredManifest]
    tags: list[StoredManifest]
    unreadable: list[str]


def reachable(stored: Iterable[StoredManifest], roots: Iterable[str] = ()) -> Reachability:
    """Follow tags (and `roots`) to their manifests, indexes to their children, subjects to their referrers."""
    by_digest: dict[str, StoredManifest] = {}
    tags: list[StoredManifest] = []
    unreadable: list[str] = []
    for item in stored:
        if not item.intact:
            unreadable.append(item.key)
        elif item.by_digest:
            by_digest[item.digest] = item
        else:
            tags.append(item)
    for tag in tags:
        by_digest.setdefault(tag.digest, tag)
    referrers: dict[str, list[str]] = {}
    for digest, item in by_digest.items():
        if item.manifest and item.manifest.subject:
            referrers.setdefault(item.manifest.subject.digest, []).append(digest)
    kept: set[str] = set()
    blobs: set[str] = set()
    # A tag keeps each digest key its bytes hash to: the sha256 one, and a sha512 one if it was pushed named so.
    pending = [tag.digest for tag in tags] + [digest_of(tag.body, "sha512") for tag in tags] + list(roots)
    while pending:
        digest = pending.pop()
        if digest in kept:
            continue
        kept.add(digest)
        pending += referrers.get(digest, [])
        manifest = by_digest[digest].manifest if digest in by_digest else None
        if manifest is not None:
            pending += [child.digest for child in manifest.children]
            blobs.update(blob.digest for blob in manifest.blobs)
    return Reachability(kept, blobs, by_digest, tags, unreadable)


@dataclass
class Plan:
    """What one repository lets go, from one reading of it: tags (with the reason), manifests, blobs."""

    name: str
    tags: dict[str, str]
    manifests: dict[str, StoredManifest]
    blobs: list[str]
    # What each expiring tag held, and when it was written, when planned: a push since moves it out of the plan.
    tag_versions: dict[str, tuple[bytes, float | None]] = field(default_factory=dict)

    def candidates(self) -> list[str]:
        keys = [layout.manifest(self.name, reference) for reference in (*self.tags, *self.manifests)]
        return keys + [layout.blob(self.name, digest) for digest in self.blobs]


class Collector:
    def __init__(
        self,
        storage: Storage,
        grace_seconds: float,
        delete: bool,
        out: TextIO,
        progress: Progress,
        policy: Policy | None = None,
    ) -> None:
        self.storage = storage
        self.grace_seconds = grace_seconds
        self.policy = policy or Policy()
        # Untagged manifests go after the policy's `untagged_after`, never sooner than the grace period.
        self.untagged_after = max(grace_seconds, self.policy.untagged_after or 0)
        self.delete = delete
        self.out = out
        self.progress = progress
        self.report = Report()
        self.started = time.time()
        self.deleted_blobs: set[str] = set()

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def plan(self, inventory: Inventory) -> list[Plan]:
        plans = [self.plan_repository(repository) for repository in inventory.sorted_repositories()]
        return [plan for plan in plans if plan is not None]

    def report_plans(self, plans: list[Plan]) -> None:
        """A dry run: what would go, and why."""
        for plan in plans:
            for tag, why in sorted(plan.tags.items()):
                self.would_delete(layout.manifest(plan.name, tag), why)
            for digest in sorted(plan.manifests):
                self.would_delete(layout.manifest(plan.name, digest))
            for digest in plan.blobs:
                self.would_delete(layout.blob(plan.name, digest))

    def finish(self, inventory: Inventory, live: LiveParticipants | None = None) -> Report:
        """What is not a repository's: sharing records, interrupted commits, abandoned multipart uploads (older
        than the grace, or, in a `--delete` run, whose writer is not alive: `live`)."""
        self.forget_blob_records(inventory)
        for upload_id in self.old_enough(sorted(inventory.staged_uploads), layout.staged_upload):
            key = layout.staged_upload(upload_id)
            self.remove(key, partial(self.storage.delete, key))
        if isinstance(self.storage, MultipartStorage):
            self.abort_abandoned_multipart(self.storage, live)
        return self.report

    def abort_abandoned_multipart(self, storage: MultipartStorage, live: LiveParticipants | None = None) -> None:
        """Abort multipart uploads older than the grace (a live session's upload is younger than the purge age),
        and those whose writer died (a replica killed mid-push): the participants recorded as sending to that key
        are none of them alive, or, with no record, it began before every live participant started. A replica
        sharing staging with the dead one may still resume its session: it then sends the file whole."""
        records = self.multipart_records(storage)
        for key, upload_id, started in sorted(storage.unfinished_multipart()):
            writers = records.get(layout.multipart_record_name(key), {})
            age = self.started - started
            dead = live is not None and live.abandoned(set(writers), started, CLOCK_SKEW_SECONDS)
            if age < self.grace_seconds and not dead:
                self.say(f"kept-recent multipart {key} {upload_id} started {age:.0f}s ago")
                continue
            self.report.garbage += 1
            self.remove(f"multipart {key} {upload_id}", partial(storage.abort_multipart, key, upload_id))
        for writers in records.values():  # a dead writer's records: its uploads are aborted, or were finished
            for writer, record in writers.items():
                if live is not None and writer not in live.alive:
                    self.remove(record, partial(storage.delete, record))

    def multipart_records(self, storage: MultipartStorage) -> dict[str, dict[str, str]]:
        """Record name (of a key) -> {writer: record key}, from `layout.multipart_record` keys."""
        found: dict[str, dict[str, str]] = {}
        for key in storage.list(layout.MULTIPART_RECORDS):  # type: ignore[attr-defined]
            writer, _, name = key.removeprefix(layout.MULTIPART_RECORDS).rpartition("/")
            if writer:
                found.setdefault(name, {})[writer] = key
        return found

    def plan_repository(self, repository: Repository) -> Plan | None:
        self.report.repositories += 1
        self.report.blobs += len(repository.blobs)
        self.report.manifests += len(repository.digests)
        stored = list(read_manifests(self.storage, repository, self.progress))
        alive = reachable(stored)
        if alive.unreadable:
            self.report.skipped.append(repository.name)
            self.progress.say(f"{repository.name} left alone, unreadable: {', '.join(alive.unreadable)}")
            return None
        name = repository.name
        expired = self.judge_tags(name, alive.tags)
        versions = {tag.reference: _version(tag) for tag in alive.tags if tag.reference in expired}
        if expired:
            stored = [item for item in stored if item.by_digest or item.reference not in expired]
            alive = reachable(stored)
        unreferenced = sorted(d for d in repository.digests - alive.manifests if d in alive.by_digest)
        old = self.old_enough(unreferenced, partial(layout.manifest, name), self.untagged_after)
        recent = set(unreferenced) - set(old)
        if recent:  # a push in progress: what its manifests reference stays too
            alive = reachable(stored, roots=recent)
            self.report.garbage -= sum(digest in alive.manifests for digest in old)
        dropped = {digest: alive.by_digest[digest] for digest in old if digest not in alive.manifests}
        blobs = self.old_enough(sorted(repository.blobs - alive.blobs), partial(layout.blob, name))
        return Plan(name, expired, dropped, blobs, versions)

    def judge_tags(self, name: str, tags: list[StoredManifest]) -> dict[str, str]:
        """The tags the repository's retention rule lets go, with the reason; a line for each one kept."""
        expired = {}
        for decision in judge_tags(name, tags, self.policy, self.started):
            if decision.keep:
                self.say(f"keep {decision.tag.key} ({decision.why})")
            else:
                expired[decision.tag.reference] = decision.why
                self.report.garbage += 1
        return expired

    def execute(self, plan: Plan, claimed: set[str]) -> None:
        """Delete what the plan found, except what a push claimed or what the repository references now.

        The repository is read again first: every manifest there now, but the condemned ones, stays with all it
        reaches (a manifest pushed since the plan, by a replica or by a tool that does not claim). Tags go
        first, then manifests, then blobs, so that every state in between pulls.
        """
        name = plan.name
        for key in sorted(set(plan.candidates()) & claimed):
            self.say(f"kept-claimed {key} (a push relies on it)")
        tags = {tag for tag in plan.tags if layout.manifest(name, tag) not in claimed}
        doomed = {digest for digest in plan.manifests if layout.manifest(name, digest) not in claimed}
        now = relist_manifests(self.storage, name)
        now_read = list(read_manifests(self.storage, now, self.progress))
        tags -= self.pushed_again(plan, now_read)
        current = [s for s in now_read if s.by_digest or s.reference not in tags]
        alive = reachable(current, roots=now.digests - doomed)
        if alive.unreadable:
            self.progress.say(f"{name} left alone, unreadable now: {', '.join(alive.unreadable)}")
            return
        self.delete_tags(name, sorted(tags & now.tags), plan.tags)
        for digest in sorted(doomed & now.digests - alive.manifests):
            item = plan.manifests[digest]
            if self.remove(layout.manifest(name, digest), partial(self.forget_manifest, name, item)):
                self.report.removed.append(Removal(name, digest, item.manifest.media_type if item.manifest else ""))
        for digest in plan.blobs:
            key = layout.blob(name, digest)
            if key in claimed or digest in alive.blobs:
                continue
            if self.remove(key, partial(self.storage.delete, key)):
                self.report.removed.append(Removal(name, digest, layout.OCTET_STREAM))
            self.deleted_blobs.add(digest)

    def pushed_again(self, plan: Plan, now: list[StoredManifest]) -> set[str]:
        """The expiring tags pushed since the plan (new content, or the same again): retention judged the push it
        saw, not this one."""
        versions = plan.tag_versions
        moved = {s.reference for s in now if s.reference in versions and _version(s) != versions[s.reference]}
        for tag in sorted(moved):
            self.say(f"kept-pushed-again {layout.manifest(plan.name, tag)} (pushed since gc planned)")
        return moved

    def delete_tags(self, name: str, tags: list[str], why: dict[str, str]) -> None:
        """Delete tags, then rebuild the tags list at once."""
        for tag in tags:
            key = layout.manifest(name, tag)
            self.remove(key, partial(self.storage.delete, key), why[tag])
        if tags:
            documents.rebuild(self.storage, documents.tags_kind(self.storage, name))

    def old_enough(self, names: list[str], key_of: Callable[[str], str], min_age: float | None = None) -> list[str]:
        """Count each unreferenced object; report those modified within the grace period (or `min_age`), return
        the others."""
        min_age = self.grace_seconds if min_age is None else min_age
        old = []
        for name in names:
            key = key_of(name)
            info = self.storage.stat(key)
            if info is None:  # gone since the listing
                continue
            self.report.garbage += 1
            age = self.started - (info.last_modified or 0)
            if age < min_age:
                self.report.recent += 1
                self.say(f"kept-recent {key} modified {age:.0f}s ago")
            else:
                old.append(name)
        return old

    def would_delete(self, key: str, why: str = "") -> None:
        self.say(f"would-delete {key}" + (f" ({why})" if why else ""))

    def remove(self, key: str, delete: Callable[[], None], why: str = "") -> bool:
        """Delete (True), or only report in a dry run (False)."""
        if not self.delete:
            self.would_delete(key, why)
            return False
        because = f" ({why})" if why else ""
        delete()
        self.report.deleted += 1
        self.say(f"deleted {key}{because}")
        return True

    def forget_manifest(self, name: str, item: StoredManifest) -> None:
        """Delete a manifest by digest, and its entry in the referrers index of its subject."""
        self.storage.delete(item.key)
        if item.manifest is None or item.manifest.subject is None:
            return
        subject = item.manifest.subject.digest
        self.storage.delete(layout.referrer_entry(name, subject, item.digest))
        documents.rebuild(self.storage, documents.referrers_kind(self.storage, name, subject))

    def forget_blob_records(self, inventory: Inventory) -> None:
        """A sharing record of a blob that no repository holds any more would only send HEADs to a miss."""
        for digest in sorted(self.deleted_blobs & inventory.blob_records):
            if all(self.storage.stat(layout.blob(name, digest)) is None for name in inventory.holders(digest)):
                self.storage.delete(layout.blob_location(digest))


def _version(tag: StoredManifest) -> tuple[bytes, float | None]:
    return tag.body, tag.info.last_modified


def gc(
    storage: Storage,
    *,
    delete: bool = False,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    out: TextIO | None = None,
    progress: Progress | None = None,
    policy: Policy | None = None,
    timing: RunTiming | None = None,
) -> Report:
    """A dry run reports from one listing. `--delete` runs the protocol of app/registry/gc_runs.py: announce,
    settle, list and plan, mark, wait the grace, condemn, delete what no push claimed, end."""
    progress = progress or Progress("gc")
    out = out or sys.stdout
    collector = Collector(storage, grace_seconds, delete, out, progress, policy)
    if not delete:
        inventory = take_inventory(storage, progress)
        collector.report_plans(collector.plan(inventory))
        return summarize(collector.finish(inventory), inventory, progress, delete)
    with announced_run(storage, timing or RunTiming(), progress) as run:
        inventory = take_inventory(storage, progress)
        plans = collector.plan(inventory)
        claimed = run.condemn([key for plan in plans for key in plan.candidates()])
        for plan in plans:
            collector.execute(plan, claimed)
        report = collector.finish(inventory, run.live_participants())
    return summarize(report, inventory, progress, delete)


def summarize(report: Report, inventory: Inventory, progress: Progress, delete: bool) -> Report:
    report.keys = inventory.keys
    progress.say(report.summary(delete))
    return report
