"""The page's files: written into the store once per version at start-up, served at the service's `/` like the bucket.

No browser here: what is stored, how many requests a start costs, and the headers.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from app import layout
from app.registry import build_registry
from app.registry.catalog_page import PAGE_TYPE, hashed_name, page_objects, replace_once, version
from app.settings import Settings
from app.storage import Storage, open_storage
from tests.conftest import s3_settings
from tests.support.registry_server import running_registry
from tests.support.seaweed import S3Server
from tests.support.static_server import StaticBucketServer

START_UP_CHECKS = ("check", "probe_conditional_overwrite")  # is the bucket there, does it honour If-Match


class CountingStorage:
    """A store that counts the calls made to it about the page, by name (the registry sees the same object
    otherwise); calls about the registry's own keys (`v2/…`, read at start by `Registry.warm`) and the start-up's
    checks of the store (`START_UP_CHECKS`) are not counted."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        found = getattr(self.inner, name)
        if not callable(found):
            return found

        def counted(*args: Any, **kwargs: Any) -> Any:
            if name not in START_UP_CHECKS and not (args and str(args[0]).startswith("v2/")):
                self.calls[name] += 1
            return found(*args, **kwargs)

        return counted


def start_and_stop(settings: Settings, storage: Storage, then: Callable[[httpx.Client], None] = lambda _: None) -> None:
    """One process lifetime of the service over `storage`: start-up, `then`, shut-down."""
    with running_registry(settings, build_registry(settings, storage)) as url, httpx.Client(base_url=url) as client:
        then(client)


def test_a_start_writes_the_page_once_and_a_restart_only_reads_it(settings: Settings) -> None:
    storage = CountingStorage(open_storage(settings))
    start_and_stop(settings, storage)  # type: ignore[arg-type]
    assert storage.calls == {"read_small": 1, "put_bytes": len(page_objects())}
    for item in page_objects():
        found = storage.inner.read_small(item.key)
        assert found is not None and item.matches(*found), item.key

    storage.calls.clear()
    start_and_stop(settings, storage)  # type: ignore[arg-type]
    assert storage.calls == {"read_small": 1}

    page = page_objects()[-1]
    storage.inner.put_bytes(page.key, b"<!doctype html><p>an older version", page.content_type, page.cache_control)
    storage.calls.clear()
    start_and_stop(settings, storage)  # type: ignore[arg-type]
    assert storage.calls == {"read_small": 1, "put_bytes": len(page_objects())}
    found = storage.inner.read_small(page.key)
    assert found is not None and found[0] == page.body


def test_the_service_serves_the_stored_page_at_the_root_with_a_strict_policy(settings: Settings) -> None:
    def check(client: httpx.Client) -> None:
        page = client.get("/")
        assert page.status_code == 200
        assert page.headers["Content-Type"] == PAGE_TYPE
        assert page.headers["Cache-Control"] == "no-cache"
        policy = page.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "script-src 'self'" in policy and "unsafe" not in policy
        assert page.content == page_objects()[-1].body
        for asset in page_objects()[:-1]:
            served = client.get(f"/{asset.key}")
            assert served.status_code == 200
            assert (served.headers["Content-Type"], served.headers["Cache-Control"]) == (
                asset.content_type,
                layout.MANIFEST_CACHE_IMMUTABLE,
            )
            assert served.content == asset.body
        head = client.head("/")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["Content-Length"] == str(len(page_objects()[-1].body))
        for missing in ("/assets/app.0000000000000000.js", "/assets/..%2Fv2%2F_catalog", "/assets/.meta"):
            refused = client.get(missing)
            assert refused.status_code == 404
            assert refused.json()["errors"][0]["code"] == "UNSUPPORTED"
        api = client.get("/v2/")
        assert (api.status_code, api.json()) == (200, {})  # registry clients see no change

    start_and_stop(settings, open_storage(settings), check)


def test_the_page_names_its_assets_by_content_and_carries_the_version() -> None:
    page = page_objects()[-1].body.decode()
    for asset in page_objects()[:-1]:
        assert f'"{asset.key}"' in page
        assert re.fullmatch(r"assets/(style\.[0-9a-f]{16}\.css|app\.[0-9a-f]{16}\.js)", asset.key)
    assert hashed_name("app.js", b"x") == f"app.{hashlib.sha256(b'x').hexdigest()[:16]}.js"
    assert f'<meta name="generator" content="storj-registry {version()}">' in page
    assert "<script>" not in page and "style=" not in page  # nothing inline: a strict CSP allows the page
    with pytest.raises(ValueError, match="exactly once"):
        replace_once("a a", "a", "b")


def test_the_bucket_serves_the_same_page_at_its_root(s3_server: S3Server, bucket: str, tmp_path: Path) -> None:
    settings = s3_settings(s3_server, bucket, tmp_path, s3_prefix="images")
    start_and_stop(settings, open_storage(settings))
    with StaticBucketServer(s3_server, bucket, prefix="images") as share:
        page = httpx.get(f"{share.url}/")
        assert page.status_code == 200
        assert page.headers["Content-Type"] == PAGE_TYPE
        assert page.content == page_objects()[-1].body
        asset = page_objects()[0]
        assert httpx.get(f"{share.url}/{asset.key}").content == asset.body
