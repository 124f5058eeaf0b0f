"""Inputs that once answered 500: lone surrogates in manifests, non-ASCII page sizes and Basic headers, and a
DELETE of an upload while its final PUT verifies it. Each now gets a 4xx or a coherent answer."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait

import httpx
import pytest

from app.registry import uploads
from app.settings import Settings
from tests.security.raw import RawClient
from tests.support.pushing import OCI_MANIFEST, descriptor, push_blob, push_image
from tests.support.registry_server import running_registry

EMPTY_TYPE = "application/vnd.oci.empty.v1+json"


def referrer_with(subject: bytes, field: str, value: str) -> bytes:
    """A referrer whose annotation (or artifactType) is `value`, escaped as JSON text (`\\ud800` stays an escape)."""
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom",
        "config": descriptor(EMPTY_TYPE, b"{}"),
        "layers": [descriptor(EMPTY_TYPE, b"{}")],
        "subject": descriptor(OCI_MANIFEST, subject),
    }
    if field == "annotations":
        document["annotations"] = {"note": value}
    else:
        document["artifactType"] = value
    return json.dumps(document).encode()


@pytest.mark.parametrize("field", ["annotations", "artifactType"])
def test_a_manifest_with_a_lone_surrogate_is_refused_and_referrers_still_answer(
    field: str, client: httpx.Client
) -> None:
    image = push_image(client, "odd/app", "v1")
    push_blob(client, "odd/app", b"{}")
    body = referrer_with(image.manifest, field, "\ud800")
    assert b"\\ud800" in body
    refused = client.put("/v2/odd/app/manifests/sbom", content=body, headers={"Content-Type": OCI_MANIFEST})
    assert refused.status_code == 400, refused.text
    assert refused.json()["errors"][0]["code"] == "MANIFEST_INVALID"
    referrers = client.get(f"/v2/odd/app/referrers/{image.digest}")
    assert referrers.status_code == 200 and referrers.json()["manifests"] == []
    paired = referrer_with(image.manifest, field, "\U0001f600")  # a whole pair is fine
    assert client.put("/v2/odd/app/manifests/sbom", content=paired, headers={"Content-Type": OCI_MANIFEST}).is_success
    assert len(client.get(f"/v2/odd/app/referrers/{image.digest}").json()["manifests"]) == 1


@pytest.mark.parametrize("n", ["%C2%B2", "%E2%91%A0", "1" * 5000, "%D9%A3", "-1", "1e3"])
def test_page_sizes_that_are_not_ascii_decimals_are_pagination_invalid(n: str, client: httpx.Client) -> None:
    push_image(client, "odd/app", "v1")
    raw = RawClient(str(client.base_url))
    try:
        for path in ("/v2/_catalog", "/v2/odd/app/tags/list"):
            response = raw.request("GET", f"{path}?n={n}")
            assert response.status == 400, (path, response.body[:200])
            assert response.error_code == "PAGINATION_NUMBER_INVALID"
    finally:
        raw.close()


@pytest.mark.parametrize("credentials", ["\xe9", "\xff\xfe", "YWxp\xe7", "not base64!", "====", "w6k="])
def test_basic_headers_with_non_ascii_or_bad_base64_are_401(
    credentials: str, auth_settings: Callable[..., Settings], serve: Callable[[Settings], str]
) -> None:
    url = serve(auth_settings(auth_token_enabled=True))
    raw = RawClient(url)
    try:
        for path in ("/v2/", "/auth/token?service=storj-registry"):
            response = raw.request("GET", path, {"Authorization": f"Basic {credentials}"})
            assert response.status == 401, (path, response.status, response.body[:200])
            assert response.error_code == "UNAUTHORIZED"
    finally:
        raw.close()


def test_a_delete_during_the_final_put_verification_gets_a_coherent_answer(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The PUT is held inside its digest check until the DELETE has had every chance to run."""
    hashing, release = threading.Event(), threading.Event()
    real_hash = uploads.hash_file

    def held_hash(path, algorithm, length):  # type: ignore[no-untyped-def]
        hashing.set()
        release.wait(10)
        return real_hash(path, algorithm, length)

    monkeypatch.setattr(uploads, "hash_file", held_hash)
    data = b"verified while deleted" * 1000
    sha512 = "sha512:" + hashlib.sha512(data).hexdigest()
    with running_registry(settings) as url, httpx.Client(base_url=url, timeout=30) as client:
        location = client.post("/v2/odd/app/blobs/uploads/").headers["Location"]
        assert client.patch(location, content=data).status_code == 202
        with ThreadPoolExecutor(2) as pool:
            put = pool.submit(client.put, location, params={"digest": sha512})
            assert hashing.wait(10)
            delete = pool.submit(client.delete, location)
            wait([delete], timeout=1)  # a DELETE that does not wait for the commit has answered by then
            release.set()
            put_status, delete_status = put.result().status_code, delete.result().status_code
        blob = client.get(f"/v2/odd/app/blobs/{sha512}")
    assert (put_status, delete_status) == (201, 404), (put_status, delete_status)
    assert blob.status_code == 200 and blob.content == data


@pytest.mark.parametrize(
    "body",
    [b'{"schemaVersion":2,"\\ud800":1,"\\ud800":2}', b'{"schemaVersion":2,"mediaType":"\\udfff"}'],
)
def test_a_refusal_that_echoes_a_lone_surrogate_is_still_an_oci_error(body: bytes, client: httpx.Client) -> None:
    refused = client.put("/v2/odd/app/manifests/v1", content=body, headers={"Content-Type": OCI_MANIFEST})
    assert refused.status_code == 400, refused.text
    assert refused.json()["errors"][0]["code"] == "MANIFEST_INVALID"
