"""Concurrent pushes of one layer publish it once (Storj throttles repeated writes to a key)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import httpx
from prometheus_client import REGISTRY

from app.registry.keyed_locks import KeyedLocks
from tests.support.pushing import digest, push_blob

LAYER = bytes(range(256)) * 4096  # 1 MiB
PUSHES = 6


def uploaded_blobs() -> float:
    return REGISTRY.get_sample_value("registry_committed_blobs_total", {"how": "upload"}) or 0.0


def test_concurrent_commits_of_one_blob_write_it_once(client: httpx.Client) -> None:
    before = uploaded_blobs()
    with ThreadPoolExecutor(PUSHES) as pool:
        pushed = list(pool.map(lambda _: push_blob(client, "team/base", LAYER), range(PUSHES)))
    assert pushed == [digest(LAYER)] * PUSHES
    assert uploaded_blobs() - before == 1
    assert client.get(f"/v2/team/base/blobs/{digest(LAYER)}").content == LAYER


def test_keyed_locks_serialise_one_key_and_forget_it_afterwards() -> None:
    locks = KeyedLocks()
    order: list[str] = []

    async def worker(key: str, label: str) -> None:
        async with locks.hold(key):
            order.append(f"{label} in")
            await asyncio.sleep(0.01)
            order.append(f"{label} out")

    async def main() -> None:
        await asyncio.gather(worker("k", "a"), worker("k", "b"), worker("other", "c"))

    asyncio.run(main())
    assert order.index("a out") < order.index("b in")
    assert len(locks) == 0
