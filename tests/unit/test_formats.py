import json

import pytest

from app.errors import ManifestInvalid
from app.registry.formats import DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST, parse_manifest

DIGEST = "sha256:" + "a" * 64
CONFIG = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": DIGEST, "size": 2}


def body(**fields: object) -> bytes:
    return json.dumps({"schemaVersion": 2, **fields}).encode()


def test_image_manifest_lists_config_and_layers_as_blobs() -> None:
    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + "b" * 64, "size": 5}
    manifest = parse_manifest(body(mediaType=OCI_MANIFEST, config=CONFIG, layers=[layer]), OCI_MANIFEST)
    assert [d.digest for d in manifest.blobs] == [DIGEST, "sha256:" + "b" * 64]
    assert manifest.children == []


def test_media_type_comes_from_the_header_when_the_body_has_none() -> None:
    manifest = parse_manifest(body(config=CONFIG, layers=[]), OCI_MANIFEST)
    assert manifest.media_type == OCI_MANIFEST


def test_media_type_comes_from_the_body_when_the_header_is_generic() -> None:
    manifest = parse_manifest(body(mediaType=DOCKER_MANIFEST, config=CONFIG, layers=[]), "application/json")
    assert manifest.media_type == DOCKER_MANIFEST


def test_header_and_body_media_types_must_agree() -> None:
    with pytest.raises(ManifestInvalid):
        parse_manifest(body(mediaType=DOCKER_MANIFEST, config=CONFIG, layers=[]), OCI_MANIFEST)


def test_unknown_media_type_is_rejected() -> None:
    with pytest.raises(ManifestInvalid):
        parse_manifest(body(config=CONFIG, layers=[]), "application/vnd.example+json")


def test_index_children_are_manifests_not_blobs() -> None:
    child = {"mediaType": OCI_MANIFEST, "digest": DIGEST, "size": 10}
    manifest = parse_manifest(body(mediaType=OCI_INDEX, manifests=[child]), OCI_INDEX)
    assert [d.digest for d in manifest.children] == [DIGEST]
    assert manifest.blobs == []


def test_docker_manifest_list_is_an_index() -> None:
    manifest = parse_manifest(body(mediaType=DOCKER_MANIFEST_LIST, manifests=[]), DOCKER_MANIFEST_LIST)
    assert manifest.children == []


def test_artifact_type_falls_back_to_the_config_media_type() -> None:
    manifest = parse_manifest(body(mediaType=OCI_MANIFEST, config=CONFIG, layers=[]), OCI_MANIFEST)
    assert manifest.artifact_type == CONFIG["mediaType"]
    explicit = parse_manifest(
        body(mediaType=OCI_MANIFEST, artifactType="application/x-sbom", config=CONFIG, layers=[]), OCI_MANIFEST
    )
    assert explicit.artifact_type == "application/x-sbom"


def test_subject_is_parsed() -> None:
    subject = {"mediaType": OCI_MANIFEST, "digest": DIGEST, "size": 1}
    manifest = parse_manifest(body(mediaType=OCI_MANIFEST, config=CONFIG, layers=[], subject=subject), OCI_MANIFEST)
    assert manifest.subject is not None and manifest.subject.digest == DIGEST


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b'{"schemaVersion": 1}',
        b'{"schemaVersion": 2, "schemaVersion": 2, "mediaType": "' + OCI_MANIFEST.encode() + b'"}',
        b"[" * 100_000 + b"]" * 100_000,
        body(mediaType=OCI_MANIFEST, layers=[]),
        body(mediaType=OCI_MANIFEST, config={**CONFIG, "digest": "sha256:../x"}, layers=[]),
        body(mediaType=OCI_MANIFEST, config={**CONFIG, "size": -1}, layers=[]),
        body(mediaType=OCI_MANIFEST, config={**CONFIG, "size": True}, layers=[]),
        body(mediaType=OCI_MANIFEST, config=CONFIG, layers="nope"),
        body(mediaType=OCI_INDEX, manifests=[{"digest": DIGEST, "size": 1}]),
        body(mediaType=5, config=CONFIG),
        body(mediaType=OCI_MANIFEST, config=CONFIG, layers=[], annotations={"a": 1}),
    ],
)
def test_malformed_manifests_are_manifest_invalid(raw: bytes) -> None:
    with pytest.raises(ManifestInvalid):
        parse_manifest(raw, OCI_MANIFEST)
