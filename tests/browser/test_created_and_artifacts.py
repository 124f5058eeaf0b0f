"""The page's pull command fits what a tag holds (oras for an artifact), and a build time an image does not record
is said to be so (reproducible builds write 1970-01-01) rather than shown as a date."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.browser.browser import Browser
from tests.conftest import s3_settings
from tests.support import pushing
from tests.support.registry_server import running_registry
from tests.support.seaweed import S3Server
from tests.support.static_server import StaticBucketServer

pytestmark = pytest.mark.browser

SBOM = "application/spdx+json"
EMPTY = b"{}"


def push_image(client: httpx.Client, name: str, tag: str, config: dict[str, object]) -> None:
    body = json.dumps({"architecture": "amd64", "os": "linux", **config}).encode()
    layer = f"{name} {tag}".encode()
    for blob in (body, layer):
        pushing.push_blob(client, name, blob)
    manifest = pushing.image_manifest(body, [layer])
    assert pushing.push_manifest(client, name, tag, manifest, pushing.OCI_MANIFEST).status_code == 201


def push_sbom(client: httpx.Client, name: str, tag: str) -> None:
    """An artifact as `oras push --artifact-type application/spdx+json` writes it: the empty config, one layer."""
    document = b'{"spdxVersion": "SPDX-2.3"}'
    for blob in (EMPTY, document):
        pushing.push_blob(client, name, blob)
    manifest = {
        "schemaVersion": 2,
        "mediaType": pushing.OCI_MANIFEST,
        "artifactType": SBOM,
        "config": pushing.descriptor("application/vnd.oci.empty.v1+json", EMPTY),
        "layers": [pushing.descriptor(SBOM, document)],
    }
    body = json.dumps(manifest).encode()
    assert pushing.push_manifest(client, name, tag, body, pushing.OCI_MANIFEST).status_code == 201


@pytest.fixture(scope="module")
def share(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    bucket = s3_server.new_bucket("page-kinds")
    with StaticBucketServer(s3_server, bucket) as static:
        settings = s3_settings(s3_server, bucket, tmp_path_factory.mktemp("page-kinds"), public_url=static.url)
        with running_registry(settings) as url, httpx.Client(base_url=url, timeout=60) as client:
            push_image(client, "demo/built", "reproducible", {"created": "1970-01-01T00:00:00Z"})
            push_image(client, "demo/built", "undated", {})
            push_image(client, "demo/built", "dated", {"created": "2026-05-06T07:08:09Z"})
            push_sbom(client, "demo/sbom", "1")
        yield static.url


def test_a_build_time_not_recorded_is_said_so(browser: Browser, share: str) -> None:
    browser.open(f"{share}/#/demo/built")
    created = {row["Tag"]: row["Created"] for row in browser.table("Tags of demo/built")}
    assert created == {"dated": "2026-05-06 07:08 UTC", "reproducible": "not recorded", "undated": "not recorded"}
    browser.open(f"{share}/#/demo/built:reproducible")
    assert "Created\nnot recorded" in browser.text()
    assert "1970" not in browser.text()
    assert browser.errors() == []


def test_an_artifact_is_pulled_with_oras(browser: Browser, share: str) -> None:
    host = share.removeprefix("http://")
    browser.open(f"{share}/#/demo/sbom")
    browser.wait(lambda driver: browser.commands() == [f"oras pull {host}/demo/sbom:1"], "the command for an artifact")
    assert browser.table("Tags of demo/sbom")[0]["Type"] == f"Artifact: {SBOM}"
    browser.open(f"{share}/#/demo/sbom:1")
    commands = browser.commands()
    assert commands[0] == f"oras pull {host}/demo/sbom:1" and commands[1].startswith(f"oras pull {host}/demo/sbom@")
    browser.open(f"{share}/#/demo/built")
    assert browser.commands() == [f"docker pull {host}/demo/built:undated"]  # images keep docker
    assert browser.errors() == []
