"""The one freshness rule of app/registry/beliefs.py, driven with a fake clock over the in-memory store: what
memory may answer, for how long, and what ends a belief (a gc run, deletes, another replica's write)."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

from app import layout
from app.registry.beliefs import EVIDENCE_TRUST_S, LISTING_TTL_S, WRITE_TRUST_S, Beliefs, Kind
from app.registry.formats import Descriptor
from app.registry.staging import Document, Staging
from app.storage.memory import MemoryStorage

NAME = "team/app"
DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Horizon:
    """What GcRuns tells: -inf before any run, +inf while one is on, then when its end was seen."""

    def __init__(self) -> None:
        self.value = -math.inf

    def __call__(self) -> float:
        return self.value


def beliefs(storage: MemoryStorage, clock: Clock, horizon: Horizon | None = None, **options: object) -> Beliefs:
    return Beliefs(storage, horizon=horizon or Horizon(), clock=clock, **options)  # type: ignore[arg-type]


def size(memory: Beliefs, digest: str = DIGEST) -> int | None:
    return asyncio.run(memory.size(NAME, Kind.BLOB, digest))


def test_a_listing_answers_heads_for_its_window_then_the_store_is_asked() -> None:
    storage, clock = MemoryStorage(), Clock()
    memory = beliefs(storage, clock)
    assert size(memory) is None  # the first question lists the repository
    storage.put_bytes(layout.blob(NAME, DIGEST), b"xyz", layout.OCTET_STREAM)
    calls = sum(storage.calls.values())
    assert size(memory) is None  # still the listing's answer: no request
    assert sum(storage.calls.values()) == calls
    clock.now += LISTING_TTL_S
    assert size(memory) == 3  # too old: asked again


def test_nothing_counts_during_a_gc_run_nor_what_was_learnt_before_its_end() -> None:
    storage, clock, horizon = MemoryStorage(), Clock(), Horizon()
    storage.put_bytes(layout.blob(NAME, DIGEST), b"xyz", layout.OCTET_STREAM)
    memory = beliefs(storage, clock, horizon)
    assert size(memory) == 3
    memory.wrote(NAME, Kind.BLOB, OTHER, 5)
    assert memory.vouched(NAME, Kind.BLOB, OTHER)
    horizon.value = math.inf  # a run is announced
    assert not memory.vouched(NAME, Kind.BLOB, OTHER)
    storage.delete(layout.blob(NAME, DIGEST))
    assert size(memory) is None  # the store, not memory
    clock.now += 1
    horizon.value = clock.now  # its end is seen
    assert not memory.vouched(NAME, Kind.BLOB, OTHER)  # learnt before the end: it may have deleted it


def test_vouching_needs_recent_evidence_or_a_recent_write_here_and_deletes_disabled() -> None:
    storage, clock = MemoryStorage(), Clock()
    memory = beliefs(storage, clock)
    memory.wrote(NAME, Kind.BLOB, DIGEST, 3)
    storage.put_bytes(layout.blob(NAME, OTHER), b"xy", layout.OCTET_STREAM)
    assert size(memory, OTHER) == 2  # seen (a listing)
    clock.now += EVIDENCE_TRUST_S
    assert memory.vouched(NAME, Kind.BLOB, DIGEST) and not memory.vouched(NAME, Kind.BLOB, OTHER)
    clock.now += WRITE_TRUST_S
    assert not memory.vouched(NAME, Kind.BLOB, DIGEST)
    deleting = beliefs(storage, clock, deletes_enabled=True)
    deleting.wrote(NAME, Kind.BLOB, DIGEST, 3)
    assert not deleting.vouched(NAME, Kind.BLOB, DIGEST)


def test_another_replicas_publish_on_the_shared_staging_disk_ends_an_absent(tmp_path: Path) -> None:
    storage, clock = MemoryStorage(), Clock()
    staging = Staging(tmp_path)
    clock.now = time.time()  # staging markers carry wall-clock times
    memory = Beliefs(storage, staging, clock=clock)
    assert size(memory) is None  # listed: absent
    storage.put_bytes(layout.blob(NAME, DIGEST), b"xyz", layout.OCTET_STREAM)
    staging.mark_published(NAME, DIGEST, 3)  # the other replica, after its write
    assert size(memory) == 3
    memory.deleted_blob(NAME, DIGEST)  # a DELETE here ends it, and no HEAD miss shares it back
    storage.delete(layout.blob(NAME, DIGEST))
    assert staging.recently_published(NAME, DIGEST) is None and not memory.shareable(NAME, DIGEST)


def test_a_declared_size_is_compared_with_the_stored_one() -> None:
    storage, clock = MemoryStorage(), Clock()
    memory = beliefs(storage, clock)
    storage.put_bytes(layout.blob(NAME, DIGEST), b"xyz", layout.OCTET_STREAM)
    lying = Descriptor("application/vnd.oci.image.config.v1+json", DIGEST, 2)
    checked = asyncio.run(memory.check(NAME, [lying], []))
    assert checked.missing == [] and checked.wrong_sizes == [(DIGEST, 2, 3)]
    honest = Descriptor("application/vnd.oci.image.config.v1+json", DIGEST, 3)
    missing = Descriptor("application/vnd.oci.image.layer.v1.tar", OTHER, 1)
    assert asyncio.run(memory.check(NAME, [honest, missing], [])).missing == [OTHER]


def test_a_tags_document_counts_for_its_window_and_never_with_deletes() -> None:
    storage, clock, horizon = MemoryStorage(), Clock(), Horizon()
    memory = beliefs(storage, clock, horizon)
    memory.learn_tags_document(NAME, Document(frozenset(["v1"]), '"1"', clock.now))
    assert memory.tags_document(NAME) is not None
    horizon.value = clock.now + 1  # retention may have deleted `v1` since
    assert memory.tags_document(NAME) is None
    deleting = beliefs(storage, clock, deletes_enabled=True)
    deleting.learn_tags_document(NAME, Document(frozenset(["v1"]), '"1"', clock.now))
    assert deleting.tags_document(NAME) is None


def test_a_document_another_process_sharing_staging_wrote_counts_only_when_newer_and_since_start(
    tmp_path: Path,
) -> None:
    storage, clock, horizon = MemoryStorage(), Clock(), Horizon()
    staging = Staging(tmp_path)
    key = layout.tags_list(NAME)
    staging.share_document(key, Document(frozenset(["old"]), '"0"', clock.now - 1))  # before this start
    memory = beliefs(storage, clock, horizon)
    memory.adopt_tags_document(NAME, staging.shared_document(key))
    assert memory.tags_document(NAME) is None

    clock.now += 5
    staging.share_document(key, Document(frozenset(["v1", "v2"]), '"2"', clock.now))
    memory.adopt_tags_document(NAME, staging.shared_document(key))
    adopted = memory.tags_document(NAME)
    assert adopted is not None and adopted.entries == {"v1", "v2"} and adopted.etag == '"2"'

    memory.learn_tags_document(
        NAME, Document(frozenset(["v1", "v2", "v3"]), '"3"', clock.now + 1)
    )  # this process wrote since
    memory.adopt_tags_document(NAME, staging.shared_document(key))
    assert memory.tags_document(NAME).etag == '"3"'  # type: ignore[union-attr]

    staging.share_document(layout.CATALOG, Document(frozenset([NAME]), '"c"', clock.now))
    horizon.value = math.inf  # a gc run: nothing learnt counts, shared or not
    memory.adopt_catalog(staging.shared_document(layout.CATALOG))
    assert memory.catalog_document() is None


def test_a_shared_document_that_is_not_one_is_ignored(tmp_path: Path) -> None:
    staging = Staging(tmp_path)
    key = layout.tags_list(NAME)
    staging.share_document(key, Document(frozenset(["v1"]), None, 1.0))
    assert staging.shared_document(layout.tags_list("other/app")) is None
    document = next((tmp_path / "documents").glob("*[!k]"))  # not the .lock
    document.write_text('{"key": "' + key + '", "entries": "v1", "etag": null, "at": 1}')
    assert staging.shared_document(key) is None
    document.write_text("not json")
    assert staging.shared_document(key) is None
