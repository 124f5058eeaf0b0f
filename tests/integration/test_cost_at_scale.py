"""A push costs the same in a repository of 5,000 tags as in one of 10, and a new repository the same among 5,000
repositories as among 10: in a fresh process (another replica, a restart) and in a warm one. Counted by a proxy
with Storj's rules (no If-Match, one write a second to a key), where derived documents are written as a chain of
versions instead of being listed (app/registry/documents.py), and a repository is listed one page at most at its
first question (app/registry/beliefs.py): past that, the blobs a push asks about are answered by the repository's
blob summary (app/registry/blob_summaries.py), read once, and rewritten behind the push.

The bucket is filled as pushes leave it (each tag its own manifest and config blob; the tags list and catalog
with their chains of versions; the blob summary), straight into SeaweedFS: filling through the service would take
minutes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from app.registry import build_registry
from app.settings import Settings
from app.storage.s3 import S3Storage
from tests.conftest import proxied_settings, s3_settings
from tests.support.fault_proxy import FaultProxy, storj_rules
from tests.support.fill import NAME, WRITERS, config, fill_catalog, fill_repository
from tests.support.pushing import monolithic_push
from tests.support.registry_server import running_registry
from tests.support.seaweed import S3Server

SMALL, LARGE = 10, 5000
Cost = dict[str, int]  # store requests by operation
Fill = Callable[[S3Storage, S3Storage, int], None]
MAX_MORE = 2  # store requests a push may cost more at LARGE than at SMALL (the bound)
STORJ_KEY_INTERVAL = 1.0  # a tags list written just now takes its next write a second later


def push(url: str, name: str, tag: str, seed: int) -> None:
    """A new 2-layer image (oras's and containerd's shape: HEAD, POST, PUT each blob; then the manifest)."""
    blobs = [config(10**6 + seed), f"new layer {seed}".encode() * 400, f"new layer {seed} again".encode() * 400]
    with httpx.Client(base_url=url, timeout=60) as client:
        monolithic_push(client, name, tag, blobs)


@contextmanager
def bucket_at(s3_server: S3Server, tmp_path: Path) -> Iterator[tuple[Settings, FaultProxy, S3Storage, S3Storage]]:
    """A fresh bucket: the service's settings (through a proxy with Storj's rules, which counts), and two stores
    for the fill: one straight to SeaweedFS (fast), one through a proxy without If-Match (documents chained)."""
    bucket = s3_server.new_bucket("scale")
    with FaultProxy(s3_server.endpoint) as proxy, FaultProxy(s3_server.endpoint) as fill_proxy:
        for fault in storj_rules():
            proxy.add(fault)
        fill_proxy.add(storj_rules()[0])
        settings = proxied_settings(
            s3_server, bucket, tmp_path / bucket, proxy, publish_in_background=True, gc_watch_seconds=300
        )
        direct = S3Storage(s3_settings(s3_server, bucket, tmp_path, s3_max_concurrency=WRITERS // 4))
        chained = S3Storage(proxied_settings(s3_server, bucket, tmp_path, fill_proxy))
        yield settings, proxy, direct, chained


def push_costs(settings: Settings, proxy: FaultProxy, new_repositories: bool) -> tuple[Cost, Cost]:
    """Store requests by operation of a push in a fresh process, then of one more in the same (warm) process."""
    registry = build_registry(settings)
    with running_registry(settings, registry) as url:
        assert registry.started_up.wait(30)
        proxy.quiet()
        proxy.forget_requests()
        push(url, "new/repository-a" if new_repositories else NAME, "fresh", 1)
        fresh = counted(proxy)
        time.sleep(STORJ_KEY_INTERVAL)
        proxy.forget_requests()
        push(url, "new/repository-b" if new_repositories else NAME, "warm", 2)
        return fresh, counted(proxy)


def counted(proxy: FaultProxy) -> Cost:
    proxy.quiet()
    return proxy.operations()


def assert_flat(small: tuple[Cost, Cost], large: tuple[Cost, Cost]) -> None:
    """At most MAX_MORE requests more at LARGE, fresh and warm, whatever their operations."""
    for at_small, at_large in zip(small, large, strict=True):
        assert sum(at_large.values()) - sum(at_small.values()) <= MAX_MORE, (small, large)


def costs_at(s3_server: S3Server, tmp_path: Path, fill: Fill, *, new_repositories: bool) -> list[tuple[Cost, Cost]]:
    """The costs of pushes (fresh, then warm) into a bucket filled to SMALL, then into one filled to LARGE."""
    costs = []
    for size in (SMALL, LARGE):
        with bucket_at(s3_server, tmp_path) as (settings, proxy, direct, chained):
            fill(direct, chained, size)
            costs.append(push_costs(settings, proxy, new_repositories=new_repositories))
    return costs


def test_a_push_costs_the_same_in_a_repository_of_10_tags_and_of_5000(s3_server: S3Server, tmp_path: Path) -> None:
    assert_flat(*costs_at(s3_server, tmp_path, fill_repository, new_repositories=False))


def test_a_new_repository_costs_the_same_among_10_and_among_5000(s3_server: S3Server, tmp_path: Path) -> None:
    assert_flat(*costs_at(s3_server, tmp_path, fill_catalog, new_repositories=True))
