"""Blob summaries (app/registry/blob_summaries.py) and how beliefs use them: in a repository too big to list in one
page, one read of the summary answers "absent" for every digest it lacks, under the same freshness rule as a
listing; a digest it has is asked of the store; the process that commits blobs there rewrites it once per push.
Driven with a fake clock over the in-memory store, with a page of PAGE blobs."""

from __future__ import annotations

import asyncio
import hashlib
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app import layout
from app.registry import beliefs as beliefs_module
from app.registry import blob_summaries
from app.registry.beliefs import LISTING_TTL_S, Kind
from app.registry.blob_summaries import BlobSummaries, Summary
from app.storage.memory import MemoryStorage
from tests.unit.test_beliefs import NAME, Clock, Horizon, beliefs

PAGE = 4


def digest(seed: int) -> str:
    return "sha256:" + hashlib.sha256(str(seed).encode()).hexdigest()


HELD = [digest(n) for n in range(PAGE + 2)]  # more than a page
NEW = [digest(n) for n in range(100, 103)]


@pytest.fixture(autouse=True)
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(beliefs_module, "LISTING_PAGE", PAGE)


def big_repository(*, summary: bool = True) -> MemoryStorage:
    storage = MemoryStorage()
    for number, held in enumerate(HELD):
        storage.put_bytes(layout.blob(NAME, held), b"x" * number, layout.OCTET_STREAM)
    if summary:
        blob_summaries.write(storage, NAME, Summary.of(HELD))
    storage.calls.clear()
    return storage


def sizes(memory: beliefs_module.Beliefs, digests: list[str]) -> list[int | None]:
    async def ask() -> list[int | None]:
        return [await memory.size(NAME, Kind.BLOB, d) for d in digests]

    return asyncio.run(ask())


def stored_digests(storage: MemoryStorage, digests: list[str]) -> list[str]:
    """Which of these digests the stored summary holds."""
    found = storage.read_small(layout.blob_summary(NAME))
    assert found is not None
    summary = Summary.decode(found[0])
    assert summary is not None
    return [d for d in digests if d in summary]


def push(memory: beliefs_module.Beliefs, summaries: BlobSummaries, digests: list[str], *, manifest: bool) -> None:
    """A push's blob question, its commits, then its manifest (the summary's rewrite), or an exit before it."""

    async def pushing() -> None:
        await memory.size(NAME, Kind.BLOB, digests[0])
        for new in digests:
            memory.wrote(NAME, Kind.BLOB, new, 1)
            summaries.wrote(NAME)
        if manifest:
            summaries.flush(NAME)
        await summaries.settle()

    asyncio.run(pushing())


HEX = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)


@given(st.lists(HEX), st.lists(HEX))
def test_a_summary_holds_what_it_was_given_and_reads_back_as_written(held: list[str], others: list[str]) -> None:
    summary = Summary.of(f"sha256:{hex_}" for hex_ in held)
    decoded = Summary.decode(summary.encode())
    assert decoded is not None and len(decoded) == len(summary) == len({hex_[:8] for hex_ in held})
    for hex_ in held + others:
        assert (f"sha256:{hex_}" in decoded) == any(hex_[:8] == h[:8] for h in held)


@given(st.binary())
def test_anything_else_is_not_a_summary(document: bytes) -> None:
    assert Summary.decode(document) is None or document.startswith(blob_summaries.MAGIC)


def test_one_read_of_the_summary_answers_absent_for_every_new_blob() -> None:
    storage, clock = big_repository(), Clock()
    memory = beliefs(storage, clock)
    assert sizes(memory, NEW) == [None, None, None]
    assert storage.calls["read_small"] == 2  # the tags list and the summary, once
    assert storage.calls["stat"] == 0
    assert sizes(memory, [HELD[3]]) == [3]  # a "maybe": the store answers
    assert storage.calls["stat"] == 1


def test_without_a_summary_each_question_asks_the_store_and_the_summary_is_read_once() -> None:
    storage, clock = big_repository(summary=False), Clock()
    memory = beliefs(storage, clock)
    assert sizes(memory, NEW) == [None, None, None]
    assert storage.calls["stat"] == 3
    assert storage.calls["read_small"] == 2


def test_the_summary_counts_for_its_window_and_not_across_a_gc_run() -> None:
    storage, clock, horizon = big_repository(), Clock(), Horizon()
    memory = beliefs(storage, clock, horizon)
    assert sizes(memory, NEW[:1]) == [None]
    storage.put_bytes(layout.blob(NAME, NEW[1]), b"abc", layout.OCTET_STREAM)  # another writer, summary not told
    blob_summaries.write(storage, NAME, Summary.of([*HELD, NEW[1]]))
    assert sizes(memory, NEW[1:2]) == [None]  # the summary read a moment ago: a wrong "absent", an upload again
    clock.now += LISTING_TTL_S
    assert sizes(memory, NEW[1:2]) == [3]  # too old: read again, a "maybe", asked
    horizon.value = math.inf
    storage.calls.clear()
    assert sizes(memory, NEW[2:]) == [None]
    assert storage.calls["stat"] == 1  # during a run only the store answers


def test_blobs_written_here_are_in_the_summary_this_process_writes() -> None:
    storage, clock = big_repository(), Clock()
    memory = beliefs(storage, clock)
    push(memory, BlobSummaries(storage, memory), NEW, manifest=True)
    assert storage.calls["put_bytes"] == 1  # once for the push
    assert stored_digests(storage, HELD + NEW) == HELD + NEW


def test_a_big_repository_without_a_summary_gets_one_from_a_full_listing() -> None:
    storage, clock = big_repository(summary=False), Clock()
    memory = beliefs(storage, clock)
    push(memory, BlobSummaries(storage, memory), NEW[:1], manifest=False)  # an exit: what is out of date is written
    assert stored_digests(storage, HELD + NEW) == [*HELD, NEW[0]]
    storage.calls.clear()
    assert sizes(memory, NEW[1:]) == [None, None]  # the listing made is the summary memory holds
    assert storage.calls["stat"] == 0


def test_a_small_repository_has_no_summary() -> None:
    storage, clock = MemoryStorage(), Clock()
    memory = beliefs(storage, clock)
    push(memory, BlobSummaries(storage, memory), NEW[:1], manifest=True)
    assert storage.read_small(layout.blob_summary(NAME)) is None
