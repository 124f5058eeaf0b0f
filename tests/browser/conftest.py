"""The browser tier: the catalog page over a bucket that real clients pushed to, seen in Debian's chromium.

One browser, one bucket, one service (on SeaweedFS, blob reads redirected to the public URL as in production) and
one linksharing stand-in serve the whole session. `pushed` pushes, with skopeo and oras, a single image (two tags,
pushed a second apart), a multi-arch index and an artifact referring to the image, then the shapes the page must
survive: an artifact without layers, an image of 101 layers, an image whose config blob is gone and a repository
whose tags list is gone.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import oras.oci
import pytest

from app import layout
from app.registry.catalog_page import write_page
from app.settings import Settings
from app.storage import Storage, open_storage
from tests.browser.browser import Browser, start_chromium
from tests.conftest import s3_settings
from tests.e2e.clients import oras_client, skopeo_copy
from tests.support import pushing
from tests.support.images import OCI_MANIFEST, Image, Index, make_layer, oci_ref, write_image, write_index
from tests.support.registry_server import running_registry
from tests.support.seaweed import S3Server
from tests.support.static_server import StaticBucketServer

APP = "demo/app"
MULTI = "demo/multi"
SIGNATURE = "application/vnd.example.signature.v1"
NOTE = "application/vnd.example.note.v1"
LABELS = {"org.opencontainers.image.title": "Demo app", "org.opencontainers.image.licenses": "Apache-2.0"}
CREATED = "2026-01-02T03:04:05Z"
EMPTY = b"{}"


@dataclass(frozen=True)
class Registry:
    """Where the session's registry is: the service (push, and the page at `/`) and the static share of its bucket."""

    service_url: str
    static: StaticBucketServer
    bucket: str

    @property
    def static_url(self) -> str:
        return self.static.url

    @property
    def push_host(self) -> str:
        return self.service_url.removeprefix("http://")


@dataclass(frozen=True)
class Pushed:
    image: Image  # demo/app:1.0, then the same repository's 2.0 a second later
    newer: Image
    index: Index  # demo/multi:latest, linux/amd64 + linux/arm64
    signature: str  # an oras artifact whose subject is `image`, tagged demo/app:1.0-sig
    note: str  # demo/app@<digest>: an artifact with no layers
    many_layers: str  # demo/layers:101
    broken: str  # demo/broken:1, its config blob deleted
    untagged: str  # demo/untagged: its tags/list deleted


@pytest.fixture(scope="session")
def browser_bucket(s3_server: S3Server) -> str:
    return s3_server.new_bucket("browser")


@pytest.fixture(scope="session")
def registry(s3_server: S3Server, browser_bucket: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with StaticBucketServer(s3_server, browser_bucket) as static:
        settings: Settings = s3_settings(
            s3_server, browser_bucket, tmp_path_factory.mktemp("browser-service"), public_url=static.url
        )
        with running_registry(settings) as url:
            yield Registry(url, static, browser_bucket)


@pytest.fixture(scope="session")
def pushed(registry: Registry, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Pushed:
    work = tmp_path_factory.mktemp("browser-images")
    host = registry.push_host
    config = {"config": {"Labels": LABELS}, "created": CREATED}
    image = write_image(work / "app", "1.0", [make_layer(7001, 2048), make_layer(7002, 4096)], config_extra=config)
    skopeo_copy(oci_ref(work / "app", "1.0"), f"docker://{host}/{APP}:1.0", "--preserve-digests")
    time.sleep(1.1)  # Last-Modified has whole seconds: the second tag must be visibly newer
    newer = write_image(work / "app", "2.0", [make_layer(7003, 1024)], config_extra={"created": CREATED})
    skopeo_copy(oci_ref(work / "app", "2.0"), f"docker://{host}/{APP}:2.0", "--preserve-digests")
    index = write_index(work / "multi", "latest", [("linux", "amd64"), ("linux", "arm64")], seed=7100)
    skopeo_copy(oci_ref(work / "multi", "latest"), f"docker://{host}/{MULTI}:latest", "--all", "--preserve-digests")
    signature = push_signature(host, image, work)
    with httpx.Client(base_url=registry.service_url, timeout=60) as client:
        note = push_note(client)
        many_layers = push_layers(client, "demo/layers", "101", 101)
        broken = push_layers(client, "demo/broken", "1", 1)
        untagged = push_layers(client, "demo/untagged", "1", 1)
    s3 = s3_server.client()
    s3.delete_object(Bucket=registry.bucket, Key=layout.blob("demo/broken", pushing.digest(broken.config)))
    s3.delete_object(Bucket=registry.bucket, Key=layout.tags_list("demo/untagged"))
    return Pushed(image, newer, index, signature, note, many_layers.digest, broken.digest, untagged.digest)


def push_signature(host: str, image: Image, work: Path) -> str:
    """oras pushes an artifact whose `subject` is the image: the registry lists it in the image's referrers."""
    payload = work / "signature.bin"
    payload.write_bytes(b"a signature\n")
    subject = oras.oci.Subject(mediaType=OCI_MANIFEST, digest=image.manifest_digest, size=len(image.manifest_bytes))
    response = oras_client(host).push(
        f"{host}/{APP}:1.0-sig",
        files=[f"{payload}:application/vnd.example.signature.part.v1"],
        manifest_config=f":{SIGNATURE}",
        subject=subject,
        disable_path_validation=True,
        quiet=True,
    )
    return response.headers["Docker-Content-Digest"]


def push_note(client: httpx.Client) -> str:
    """An artifact described by its manifest alone: the empty config, no layers, pushed by digest."""
    pushing.push_blob(client, APP, EMPTY)
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": NOTE,
        "config": pushing.descriptor("application/vnd.oci.empty.v1+json", EMPTY),
        "layers": [],
        "annotations": {"note": "released"},
    }
    body = json.dumps(document).encode()
    response = pushing.push_manifest(client, APP, pushing.digest(body), body, OCI_MANIFEST)
    assert response.status_code == 201, response.text
    return pushing.digest(body)


def push_layers(client: httpx.Client, name: str, tag: str, count: int) -> pushing.PushedImage:
    config = json.dumps({"architecture": "amd64", "os": "linux", "created": CREATED, "name": name}).encode()
    layers = [f"{name} layer {i}".encode() * (i + 1) for i in range(count)]
    for blob in (config, *layers):
        pushing.push_blob(client, name, blob)
    manifest = pushing.image_manifest(config, layers)
    response = pushing.push_manifest(client, name, tag, manifest, OCI_MANIFEST)
    assert response.status_code == 201, response.text
    return pushing.PushedImage(manifest, pushing.digest(manifest), config, layers)


@dataclass
class Share:
    storage: Storage
    static: StaticBucketServer

    def reads_of(self, suffix: str) -> int:
        return sum(1 for record in self.static.requests if record.path.split("?")[0].endswith(suffix))


@pytest.fixture
def share(s3_server: S3Server, tmp_path: Path) -> Iterator[Share]:
    """A bucket holding only the page, as a service leaves it when it starts, behind a linksharing stand-in."""
    bucket = s3_server.new_bucket("page")
    storage = open_storage(s3_settings(s3_server, bucket, tmp_path))
    write_page(storage)
    with StaticBucketServer(s3_server, bucket) as static:
        yield Share(storage, static)


@pytest.fixture(scope="session")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    driver = start_chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield Browser(driver)
    driver.quit()


@pytest.fixture
def browser(chromium: Browser, tmp_path: Path) -> Iterator[Browser]:
    """The session's browser, at its desktop size, saving this test's screenshots under its temporary directory."""
    chromium.shots = tmp_path / "screenshots"
    chromium.shots.mkdir()
    chromium.driver.set_window_size(1280, 1000)
    chromium.errors()  # forget what earlier tests logged
    yield chromium
    chromium.shots = None
