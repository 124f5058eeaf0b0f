"""The page script's small pure parts (routes, formats, what counts as a platform), run in the browser itself."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from tests.browser.browser import Browser
from tests.browser.conftest import Share

pytestmark = pytest.mark.browser

DIGEST = "sha256:" + "ab" * 32


@pytest.fixture
def script(browser: Browser, share: Share) -> Browser:
    browser.open(f"{share.static.url}/")
    return browser


def call(browser: Browser, function: str, *args: Any) -> Any:
    return browser.script(f"return window.RegistryPage.{function}.apply(null, arguments);", *args)


@pytest.mark.parametrize(
    ("fragment", "route"),
    [
        ("", {"view": "catalog"}),
        ("#/", {"view": "catalog"}),
        ("#/team/app", {"view": "repository", "name": "team/app"}),
        ("#/team/app:1.2.3-rc_1", {"view": "manifest", "name": "team/app", "tag": "1.2.3-rc_1"}),
        (f"#/team/app@{DIGEST}", {"view": "manifest", "name": "team/app", "digest": DIGEST}),
        ("#/a.b/c__d/e--f:latest", {"view": "manifest", "name": "a.b/c__d/e--f", "tag": "latest"}),
        ("#main", None),  # the skip link: not a route
        ("#/../v2/_catalog", {"view": "invalid", "text": "../v2/_catalog"}),
        ("#/Team/App", {"view": "invalid", "text": "Team/App"}),
        ("#/team/app:-bad", {"view": "invalid", "text": "team/app:-bad"}),
        ("#/team/app@sha256", {"view": "invalid", "text": "team/app@sha256"}),
        ("#/%E0%A4%A", {"view": "invalid", "text": "#/%E0%A4%A"}),
    ],
)
def test_routes_from_the_fragment(script: Browser, fragment: str, route: dict[str, str] | None) -> None:
    assert call(script, "parseRoute", fragment) == route


def test_links_round_trip_through_routes(script: Browser) -> None:
    for reference in (None, "v1", DIGEST):
        args = ("team/app",) if reference is None else ("team/app", reference)
        fragment = call(script, "link", *args)
        parsed = call(script, "parseRoute", fragment)
        assert parsed["name"] == "team/app"
        assert parsed.get("tag", parsed.get("digest")) == reference


def test_formats(script: Browser) -> None:
    sizes = [call(script, "formatSize", n) for n in (0, 999, 1000, 6553, 123_456_789, 2_500_000_000_000)]
    assert sizes == ["0 B", "999 B", "1.00 kB", "6.55 kB", "123 MB", "2.50 TB"]
    assert call(script, "formatSize", None) == "—"
    assert call(script, "shortDigest", DIGEST) == "sha256:" + "ab" * 6
    assert script.script("return RegistryPage.formatDate(new Date('2026-01-02T03:04:05Z'))") == "2026-01-02 03:04 UTC"
    assert script.script("return RegistryPage.formatDate(new Date('not a date'))") == "—"


def test_attestations_are_not_platforms_and_artifact_types_fall_back_to_the_config(script: Browser) -> None:
    index = {
        "manifests": [
            {"digest": DIGEST, "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
            {"digest": DIGEST, "platform": {"os": "unknown", "architecture": "unknown"}},
            {
                "digest": DIGEST,
                "platform": {"os": "linux", "architecture": "amd64"},
                "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
            },
        ]
    }
    assert len(call(script, "platformChildren", index)) == 1
    assert call(script, "artifactTypeOf", {"artifactType": "a/b", "config": {"mediaType": "c/d"}}) == "a/b"
    assert call(script, "artifactTypeOf", {"config": {"mediaType": "application/vnd.example.sig"}}) == (
        "application/vnd.example.sig"
    )
    image_config = {"config": {"mediaType": "application/vnd.oci.image.config.v1+json"}}
    assert call(script, "artifactTypeOf", image_config) is None


def test_sha256_for_pages_over_plain_http_agrees_with_hashlib(script: Browser) -> None:
    """Over plain HTTP browsers withhold crypto.subtle; the page's own SHA-256 names tags' digests then."""
    samples = [b"", b"abc", bytes(range(256)) * 9, *(b"x" * n for n in (55, 56, 63, 64, 65, 119, 120))]
    for data in samples:
        computed = script.script("return RegistryPage.sha256Hex(new Uint8Array(arguments[0]).buffer);", list(data))
        assert computed == hashlib.sha256(data).hexdigest(), len(data)
