"""Descriptor `urls` as distribution allows them: only hosts of REGISTRY_MANIFEST_URLS_ALLOW (none by default), only
over http(s), and only a non-distributable layer with them may be absent from the repository; the config never.

Before, any descriptor with `urls` (the config too) was exempt from the existence check and the URLs were never
read: a manifest naming only absent content got 201, its `urls` pointing clients anywhere.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.settings import Settings
from tests.conftest import filesystem_settings
from tests.support.pushing import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, descriptor, error_code, push_blob
from tests.support.registry_server import running_registry

NAME = "team/windows"
CONFIG = b'{"architecture":"amd64","os":"windows"}'
FOREIGN = b"a base layer only its vendor may distribute"
NON_DISTRIBUTABLE = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
DOCKER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
CDN = "https://cdn.example.com/layers/base.tar.gz"


def manifest(config: dict[str, Any], *layers: dict[str, Any]) -> bytes:
    return json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": list(layers)}
    ).encode()


def put(client: httpx.Client, body: bytes) -> httpx.Response:
    return client.put(f"/v2/{NAME}/manifests/v1", content=body, headers={"Content-Type": OCI_MANIFEST})


def serve(settings: Settings) -> Iterator[httpx.Client]:
    with running_registry(settings) as url, httpx.Client(base_url=url, timeout=30) as client:
        push_blob(client, NAME, CONFIG)
        yield client


@pytest.fixture
def default(tmp_path: Path) -> Iterator[httpx.Client]:
    yield from serve(filesystem_settings(tmp_path))


@pytest.fixture
def allowing(tmp_path: Path) -> Iterator[httpx.Client]:
    yield from serve(filesystem_settings(tmp_path, manifest_urls_allow="cdn.example.com, Mirror.Example.org"))


def test_a_manifest_naming_only_absent_content_through_urls_is_refused(default: httpx.Client) -> None:
    """The issue's case: config and layer both absent, both with `urls`: 201 before."""
    absent = {"urls": [CDN]}
    body = manifest(
        descriptor(OCI_CONFIG, b"absent config", **absent), descriptor(NON_DISTRIBUTABLE, FOREIGN, **absent)
    )
    refused = put(default, body)
    assert (refused.status_code, error_code(refused)) == (400, "MANIFEST_BLOB_UNKNOWN")
    assert default.get(f"/v2/{NAME}/manifests/v1").status_code == 404


@pytest.mark.parametrize("media_type", [NON_DISTRIBUTABLE, DOCKER_FOREIGN])
def test_without_an_allow_list_any_urls_are_refused(default: httpx.Client, media_type: str) -> None:
    refused = put(default, manifest(descriptor(OCI_CONFIG, CONFIG), descriptor(media_type, FOREIGN, urls=[CDN])))
    assert (refused.status_code, error_code(refused)) == (400, "MANIFEST_BLOB_UNKNOWN")
    assert "REGISTRY_MANIFEST_URLS_ALLOW" in refused.json()["errors"][0]["message"]


@pytest.mark.parametrize("media_type", [NON_DISTRIBUTABLE, DOCKER_FOREIGN])
def test_a_non_distributable_layer_on_an_allowed_host_may_be_absent(allowing: httpx.Client, media_type: str) -> None:
    foreign = descriptor(media_type, FOREIGN, urls=[CDN, "http://mirror.example.org/base.tar.gz"])
    accepted = put(allowing, manifest(descriptor(OCI_CONFIG, CONFIG), foreign))
    assert accepted.status_code == 201, accepted.text


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "http://169.254.169.254/latest/meta-data/",
        "file:///etc/passwd",
        "https://cdn.example.com.evil.test/x",
        "https://user:secret@cdn.example.com/x",
        "https://cdn.example.com/x#fragment",
        "https://[::1/x",
        "",
    ],
)
def test_urls_off_the_allow_list_are_refused(allowing: httpx.Client, url: str) -> None:
    body = manifest(descriptor(OCI_CONFIG, CONFIG), descriptor(NON_DISTRIBUTABLE, FOREIGN, urls=[CDN, url]))
    refused = put(allowing, body)
    assert (refused.status_code, error_code(refused)) == (400, "MANIFEST_BLOB_UNKNOWN"), url


def test_the_config_and_ordinary_layers_are_never_exempt(allowing: httpx.Client) -> None:
    absent_config = descriptor(NON_DISTRIBUTABLE, b"config pretending to be foreign", urls=[CDN])
    refused = put(allowing, manifest(absent_config))
    assert (refused.status_code, error_code(refused)) == (400, "MANIFEST_BLOB_UNKNOWN")
    ordinary = descriptor(OCI_LAYER, FOREIGN, urls=[CDN])
    refused = put(allowing, manifest(descriptor(OCI_CONFIG, CONFIG), ordinary))
    assert (refused.status_code, error_code(refused)) == (400, "MANIFEST_BLOB_UNKNOWN")
    assert refused.json()["errors"][0]["detail"]["missing"] == [ordinary["digest"]]


@pytest.mark.parametrize("urls", ["https://cdn.example.com/x", [1], {"u": CDN}])
def test_urls_of_the_wrong_json_type_are_invalid(allowing: httpx.Client, urls: Any) -> None:
    body = manifest(descriptor(OCI_CONFIG, CONFIG), descriptor(NON_DISTRIBUTABLE, FOREIGN, urls=urls))
    refused = put(allowing, body)
    assert (refused.status_code, error_code(refused)) == (400, "MANIFEST_INVALID")
