"""The page on registries of other shapes: empty, thousands of repositories and tags, under a path, on a phone."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from app import layout
from app.registry.documents import catalog_document, tags_document
from tests.browser.browser import Browser
from tests.browser.conftest import APP, Pushed, Registry, Share
from tests.conftest import s3_settings
from tests.support.pushing import push_image
from tests.support.registry_server import running_registry
from tests.support.seaweed import S3Server
from tests.support.static_server import StaticBucketServer

pytestmark = pytest.mark.browser

REPOSITORIES = 3000
TAGS = 2500
ON_SCREEN = 60  # rows a 1000 px window shows, with the margin rows are read ahead by, comfortably rounded up


def test_an_empty_registry_says_so_and_how_to_pull(browser: Browser, share: Share) -> None:
    browser.open(f"{share.static.url}/")
    host = share.static.url.removeprefix("http://")
    assert "No repositories yet" in browser.text()
    assert f"docker pull {host}/NAME:TAG" in browser.text()
    browser.shot("empty")
    assert browser.errors() == []


def test_thousands_of_repositories_and_tags_are_shown_a_page_at_a_time(browser: Browser, share: Share) -> None:
    names = [f"team{i % 10}/service-{i:05d}" for i in range(REPOSITORIES)]
    share.storage.put_bytes(layout.CATALOG, catalog_document(names), layout.JSON, layout.MUTABLE_CACHE)
    tags = [f"1.{i}" for i in range(TAGS)]
    big = names[0]
    share.storage.put_bytes(layout.tags_list(big), tags_document(big, tags), layout.JSON, layout.MUTABLE_CACHE)

    browser.open(f"{share.static.url}/")
    assert browser.one(".count").text == f"{REPOSITORIES} repositories, showing 100"
    assert len(browser.table("Repositories")) == 100
    assert share.reads_of("/tags/list") <= ON_SCREEN  # only the rows on screen read their tags list
    browser.shot("many-repositories")
    browser.one("button.more").click()
    browser.wait(lambda d: len(browser.table("Repositories")) == 200)
    browser.one("#filter-repositories").send_keys("service-02999")
    browser.wait(lambda d: len(browser.table("Repositories")) == 1)
    assert browser.one(".count").text == f"1 of {REPOSITORIES} repositories match"

    before = share.reads_of("")
    browser.open(f"{share.static.url}/#/{big}")
    assert browser.one(".count").text == f"{TAGS} tags, showing 100"
    rows = browser.table(f"Tags of {big}")
    assert [row["Tag"] for row in rows[:3]] == ["1.0", "1.1", "1.2"]  # numeric order: 1.2 before 1.10
    assert rows[0]["Digest"] == "manifest missing"  # tags/list names them; this bucket has no manifests
    assert share.reads_of("") - before <= ON_SCREEN
    browser.shot("many-tags")


def test_the_page_works_under_a_path(browser: Browser, s3_server: S3Server, tmp_path: Path) -> None:
    """Linksharing's own domain serves a share under a path (`/raw/<access>/<bucket>/...`): URLs are relative."""
    bucket = s3_server.new_bucket("prefixed")
    settings = s3_settings(s3_server, bucket, tmp_path, s3_prefix="images")
    with running_registry(settings) as url, httpx.Client(base_url=url, timeout=60) as client:
        image = push_image(client, "team/app", "1")
    with StaticBucketServer(s3_server, bucket) as whole_bucket:
        browser.open(f"{whole_bucket.url}/images/")
        assert [row["Repository"] for row in browser.table("Repositories")] == ["team/app"]
        browser.open(f"{whole_bucket.url}/images/#/team/app:1")
        assert [row["Size"] for row in browser.table("Layers")] == [f"{len(layer)} B" for layer in image.layers]
        assert browser.errors() == []


def test_a_phone_sees_every_view_without_scrolling_sideways(
    browser: Browser, registry: Registry, pushed: Pushed
) -> None:
    browser.driver.set_window_size(390, 844)
    for name, fragment in (("phone-catalog", ""), ("phone-repository", APP), ("phone-tag", f"{APP}:1.0")):
        browser.open(f"{registry.static_url}/#/{fragment}")
        overflow, culprits = browser.sideways_overflow()
        assert overflow <= 0, f"{name}: {overflow} px wider than the screen: {culprits}"
        browser.shot(name)
