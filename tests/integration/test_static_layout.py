"""A real skopeo push leaves exactly the static layout, and a static server over the bucket serves the pull."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from app.registry.catalog_page import page_objects
from app.settings import Settings
from tests.conftest import filesystem_settings, s3_settings
from tests.support.images import Image, make_layer, oci_ref, write_image
from tests.support.registry_server import running_registry
from tests.support.seaweed import S3Server
from tests.support.static_server import StaticBucketServer
from tests.support.tools import require_tool

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
PREFIX = "images"


def skopeo(*args: str) -> str:
    command = [require_tool("skopeo"), "--insecure-policy", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def host_of(url: str) -> str:
    return url.removeprefix("http://")


@pytest.fixture
def image(tmp_path: Path) -> Image:
    return write_image(tmp_path / "src", "1", [make_layer(1, 300_000), make_layer(2, 50_000)])


def expected_layout(name: str, tag: str, image: Image) -> dict[str, str]:
    blobs = [image.config_digest, *image.layer_digests]
    return {
        "v2/index.html": "text/html",
        "v2/_catalog": "application/json",
        f"v2/{name}/tags/list": "application/json",
        f"v2/{name}/manifests/{tag}": OCI_MANIFEST,
        f"v2/{name}/manifests/{image.manifest_digest}": OCI_MANIFEST,
        **{f"v2/{name}/blobs/{digest}": "application/octet-stream" for digest in blobs},
        f"v2/_catalog.d/{name}/_entry": "application/octet-stream",  # what the catalog is rebuilt from
        **{item.key: item.content_type for item in page_objects()},  # the catalog page, written at start-up
    }


def pulled_manifest_digest(reference: str, tmp_path: Path) -> tuple[str, list[str]]:
    out = tmp_path / "pulled"
    skopeo("copy", "--src-tls-verify=false", "--preserve-digests", reference, f"oci:{out}:x")
    index = json.loads((out / "index.json").read_text())
    digest = index["manifests"][0]["digest"]
    manifest = json.loads((out / "blobs" / "sha256" / digest.split(":")[1]).read_text())
    return digest, [manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]


def test_skopeo_push_to_s3_leaves_exactly_the_static_layout_and_pulls_from_the_bucket(
    s3_server: S3Server, bucket: str, tmp_path: Path, image: Image
) -> None:
    settings = s3_settings(s3_server, bucket, tmp_path, s3_prefix=PREFIX)
    with running_registry(settings) as url:
        skopeo("copy", "--dest-tls-verify=false", oci_ref(tmp_path / "src", "1"), f"docker://{host_of(url)}/team/app:1")

    stored = s3_server.objects(bucket)
    assert all(key.startswith(f"{PREFIX}/") for key in stored), "nothing outside the prefix"
    layout = {key.removeprefix(f"{PREFIX}/"): meta.content_type for key, meta in stored.items()}
    assert layout == expected_layout("team/app", "1", image)
    tags = s3_server.admin.get_object(Bucket=bucket, Key=f"{PREFIX}/v2/team/app/tags/list")["Body"].read()
    assert json.loads(tags) == {"name": "team/app", "tags": ["1"]}

    with StaticBucketServer(s3_server, bucket, prefix=PREFIX) as static:
        digest, blobs = pulled_manifest_digest(f"docker://{host_of(static.url)}/team/app:1", tmp_path)
    assert digest == image.manifest_digest
    assert blobs == [image.config_digest, *image.layer_digests]


def test_embedded_store_accepts_a_skopeo_push_and_serves_it_back(tmp_path: Path, image: Image) -> None:
    settings: Settings = filesystem_settings(tmp_path)
    with running_registry(settings) as url:
        skopeo("copy", "--dest-tls-verify=false", oci_ref(tmp_path / "src", "1"), f"docker://{host_of(url)}/demo/app:1")
        digest, blobs = pulled_manifest_digest(f"docker://{host_of(url)}/demo/app:1", tmp_path)
    assert digest == image.manifest_digest
    assert blobs == [image.config_digest, *image.layer_digests]
    for key in expected_layout("demo/app", "1", image):
        assert (settings.data_dir / key).is_file(), key
