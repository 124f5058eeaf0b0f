"""oras (Python SDK, plain HTTP): an artifact with its own type, then a signature and an SBOM whose `subject` is an
image; the referrers listing (service API and the static `referrers` key) names both.

`OrasClient.push` sets `subject` and the config media type (the artifact type of OCI 1.1's guidance) but not a
manifest-level `artifactType`; the SBOM therefore goes through the SDK's lower-level `upload_blob` and
`upload_manifest`, still the SDK's own requests.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import oras.oci
import pytest

from tests.e2e.bucket import OCI_INDEX, BucketLayout
from tests.e2e.clients import oras_client, skopeo_copy
from tests.e2e.conftest import Endpoints
from tests.e2e.shapes import OCI_EMPTY
from tests.support.images import OCI_MANIFEST, make_layer, oci_ref, write_image

pytestmark = pytest.mark.e2e

THING = "application/vnd.example.thing.v1+json"
SIGNATURE = "application/vnd.example.signature.v1"
SBOM = "application/spdx+json"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def test_oras_artifact_signature_and_sbom_with_referrers(
    endpoints: Endpoints, layout: BucketLayout, work: Path, tmp_path: Path
) -> None:
    name = "e2e/oras"
    source = work / "oras-subject"
    image = write_image(source, "v1", [make_layer(5001, 1024)])
    skopeo_copy(oci_ref(source, "v1"), f"docker://{endpoints.push}/{name}:image", "--preserve-digests")
    client = oras_client(endpoints.push)

    data = write(tmp_path / "data.txt", b"an artifact's payload\n")
    config = write(tmp_path / "thing.json", b'{"kind":"thing"}')
    artifact = client.push(
        f"{endpoints.push}/{name}:artifact",
        files=[f"{data}:application/vnd.example.data.v1"],
        manifest_config=f"{config}:{THING}",
        disable_path_validation=True,
        quiet=True,
    ).headers["Docker-Content-Digest"]
    assert layout.check_pushed(name, "artifact", artifact)["config"]["mediaType"] == THING

    subject = oras.oci.Subject(mediaType=OCI_MANIFEST, digest=image.manifest_digest, size=len(image.manifest_bytes))
    signed = client.push(
        f"{endpoints.push}/{name}:signature",
        files=[f"{write(tmp_path / 'sig', b'signed')}:application/vnd.example.signature.part.v1"],
        manifest_config=f":{SIGNATURE}",
        subject=subject,
        disable_path_validation=True,
        quiet=True,
    )
    assert signed.headers["OCI-Subject"] == image.manifest_digest
    signature = signed.headers["Docker-Content-Digest"]
    sbom = push_sbom(endpoints.push, name, subject, tmp_path)
    for tag, digest in (("signature", signature), ("sbom", sbom)):
        layout.check_pushed(name, tag, digest)  # includes the subject's referrers index naming it

    listed = {SIGNATURE: signature, SBOM: sbom}
    via_service = httpx.get(f"{endpoints.service_url}/v2/{name}/referrers/{image.manifest_digest}")
    via_bucket = httpx.get(f"http://{endpoints.pull}/v2/{name}/referrers/{image.manifest_digest}")
    for response in (via_service, via_bucket):
        assert response.status_code == 200
        assert response.headers["Content-Type"] == OCI_INDEX
        assert {entry["artifactType"]: entry["digest"] for entry in response.json()["manifests"]} == listed
    filtered = httpx.get(via_service.url, params={"artifactType": SBOM})
    assert filtered.headers["OCI-Filters-Applied"] == "artifactType"
    assert [entry["digest"] for entry in filtered.json()["manifests"]] == [sbom]

    puller = oras_client(endpoints.pull)
    for tag, digest in (("artifact", artifact), ("signature", signature), ("sbom", sbom)):
        served = httpx.get(f"http://{endpoints.pull}/v2/{name}/manifests/{tag}")
        assert sha256(served.content) == digest
    pulled = puller.pull(target=f"{endpoints.pull}/{name}:artifact", outdir=str(tmp_path / "pulled"))
    assert [Path(path).read_bytes() for path in pulled] == [Path(data).read_bytes()]


def push_sbom(host: str, name: str, subject: oras.oci.Subject, tmp_path: Path) -> str:
    """An SBOM with a manifest-level `artifactType`, the OCI empty config `{}`, one layer, and a `subject`."""
    client = oras_client(host)
    container = client.get_container(f"{host}/{name}:sbom")
    document = b'{"spdxVersion":"SPDX-2.3","name":"e2e"}'
    layer = {"mediaType": SBOM, "digest": sha256(document), "size": len(document)}
    assert client.upload_blob(write(tmp_path / "sbom.json", document), container, layer).status_code in (200, 201)
    empty = write(tmp_path / "empty.json", b"{}")
    assert client.upload_blob(empty, container, OCI_EMPTY).status_code in (200, 201)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": SBOM,
        "config": OCI_EMPTY,
        "layers": [layer],
        "subject": {"mediaType": subject.mediaType, "digest": subject.digest, "size": subject.size},
    }
    response = client.upload_manifest(manifest, container)
    assert response.status_code == 201, response.text
    assert response.headers["OCI-Subject"] == subject.digest
    return response.headers["Docker-Content-Digest"]
