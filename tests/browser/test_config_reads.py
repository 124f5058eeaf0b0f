"""The page reads at most 64 KiB of any config blob, however large it is or says it is (issue 21, case 3).

A config is read to show a row's creation time and a tag's platform, command and labels. On Storj every byte the
page reads is egress billed to the bucket's owner, and the size a manifest declares is the pusher's word: the page
asks for the first 64 KiB with one Range request (linksharing answers 206), and shows a config it could not read
whole as too large to show. The bytes served are counted by the linksharing stand-in.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from app import layout
from app.storage import Storage, open_storage
from tests.browser.browser import Browser
from tests.conftest import s3_settings
from tests.support import pushing
from tests.support.registry_server import running_registry
from tests.support.seaweed import S3Server
from tests.support.static_server import StaticBucketServer

pytestmark = pytest.mark.browser

PAGE_READS = 64 * 1024  # MAX_CONFIG_BYTES of app/web/app.js
LARGE = 8 * 1024 * 1024
CREATED = "2026-03-04T05:06:07Z"


def image_config(size: int, label: str) -> bytes:
    """A valid image config of exactly `size` bytes (padded with a label's value)."""
    document = {"architecture": "amd64", "os": "linux", "created": CREATED, "config": {"Labels": {"pad": ""}}}
    empty = len(json.dumps(document).encode())
    document["config"]["Labels"]["pad"] = label * (size - empty)  # type: ignore[index]
    return json.dumps(document).encode()


@dataclass(frozen=True)
class Bucket:
    static: StaticBucketServer
    storage: Storage
    configs: dict[str, str]  # repository -> its config's digest

    def served(self, digest: str) -> list[tuple[str | None, int]]:
        """(Range asked, bytes sent) of every GET of that blob."""
        return [(r.range, r.sent) for r in self.static.requests if r.method == "GET" and r.path.endswith(digest)]


@pytest.fixture(scope="module")
def bucket(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bucket]:
    """Pushed through the service: an 8 MiB config declared as such, and a 10 kB one; written by hand: a manifest
    declaring 2 bytes for an 8 MiB config (the push check refuses that now; a bucket may hold one from before)."""
    name = s3_server.new_bucket("configs")
    settings = s3_settings(s3_server, name, tmp_path_factory.mktemp("config-reads"))
    configs = {}
    with running_registry(settings) as url, httpx.Client(base_url=url, timeout=120) as client:
        for repository, config in (
            ("big/config", image_config(LARGE, "x")),
            ("small/config", image_config(10_000, "y")),
        ):
            layer = f"{repository} layer".encode()
            for blob in (config, layer):
                pushing.push_blob(client, repository, blob)
            manifest = pushing.image_manifest(config, [layer])
            assert pushing.push_manifest(client, repository, "1", manifest, pushing.OCI_MANIFEST).status_code == 201
            configs[repository] = pushing.digest(config)
    storage = open_storage(settings)
    liar = lying_manifest(storage, "liar/config", image_config(LARGE, "z"))
    configs["liar/config"] = liar
    with StaticBucketServer(s3_server, name) as static:
        yield Bucket(static, storage, configs)


def lying_manifest(storage: Storage, repository: str, config: bytes) -> str:
    """A tag whose manifest declares its (8 MiB) config as 2 bytes, written straight into the bucket."""
    digest = pushing.digest(config)
    storage.put_bytes(layout.blob(repository, digest), config, layout.OCTET_STREAM)
    document = json.loads(pushing.image_manifest(config, []))
    document["config"]["size"] = 2
    body = json.dumps(document).encode()
    for reference in ("1", pushing.digest(body)):
        storage.put_bytes(layout.manifest(repository, reference), body, pushing.OCI_MANIFEST)
    tags = json.dumps({"name": repository, "tags": ["1"]}).encode()
    storage.put_bytes(layout.tags_list(repository), tags, layout.JSON)
    catalog = json.dumps({"repositories": ["big/config", "liar/config", "small/config"]}).encode()
    storage.put_bytes(layout.CATALOG, catalog, layout.JSON)
    return digest


def test_a_large_config_is_never_downloaded(browser: Browser, bucket: Bucket) -> None:
    for repository in ("big/config", "liar/config"):
        browser.open(f"{bucket.static.url}/#/{repository}")
        assert browser.table(f"Tags of {repository}")[0]["Created"] == "—"
        browser.open(f"{bucket.static.url}/#/{repository}:1")
        assert "The config blob is too large to show here" in browser.text()
        browser.shot(repository.replace("/", "-"))
    assert bucket.served(bucket.configs["big/config"]) == []  # declared larger than the page reads: not asked for
    lied = bucket.served(bucket.configs["liar/config"])
    assert lied and all(asked == f"bytes=0-{PAGE_READS - 1}" and sent <= PAGE_READS for asked, sent in lied)
    assert len(lied) == 2  # one read per page load (the repository's, then the tag's)
    assert browser.errors() == []


def test_a_small_config_is_read_whole_with_one_range_request(browser: Browser, bucket: Bucket) -> None:
    browser.open(f"{bucket.static.url}/#/small/config:1")
    assert "Platform\nlinux/amd64" in browser.text()
    labels = {row["Key"]: row["Value"] for row in browser.table("Labels")}
    assert labels["pad"].startswith("yyy")
    assert bucket.served(bucket.configs["small/config"]) == [(f"bytes=0-{PAGE_READS - 1}", 10_000)]
    assert browser.errors() == []
