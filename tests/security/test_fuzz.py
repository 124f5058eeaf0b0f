"""Hostile input, fuzzed: every refusal is a 4xx OCI error (never a 5xx), nothing escapes, nothing is written.

One registry on the S3 backend (SeaweedFS) with the key prefix `reg/` and htpasswd auth serves the module.
Requests go out through raw HTTP so `..`, `%2F`, `%00` and friends reach the server as written. After every
request: each key of the bucket is under `reg/`, no key is a folder of another one (an object at `a/b` and one at
`a/b/c` cannot both live on a filesystem, nor be told apart by a static server; the filesystem store's `.json`
sidecars count too), a refused request changed no object, and the staging directory holds only
`<staging>/<upload id>/...` (and nothing else was created beside it).

The tiers that caught what the hardening review found: names that reach into another repository's keys
(`fuzz/app/tags/list`, `index.html.json`), manifests with any text in annotations and artifactType (lone
surrogates), page sizes that are digits but not ASCII decimals, Basic credentials that are not ASCII.

Examples are bounded (200 per test, `FUZZ_EXAMPLES` to change; under CI=true a fixed, derandomized set), so the
module takes about a minute.
"""

from __future__ import annotations

import base64
import bisect
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import layout
from app.registry.staging import DOCUMENTS, PUBLISHED_MARKERS, VERIFIED_MARKERS
from tests.conftest import s3_settings
from tests.security.conftest import PASSWORDS
from tests.security.raw import RawClient, RawResponse
from tests.support.pushing import (
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    digest,
    image_manifest,
    push_blob,
    push_manifest,
)
from tests.support.registry_server import running_registry
from tests.support.seaweed import S3Server

PREFIX = "reg"
REPOSITORY = "fuzz/app"
MAX_MANIFEST = 64 * 1024
UPLOAD_DIR_RE = re.compile(r"[0-9a-f]{32}")
KNOWN_CODES = {
    "BLOB_UNKNOWN", "BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN", "DIGEST_INVALID", "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID", "MANIFEST_UNKNOWN", "NAME_INVALID", "NAME_UNKNOWN", "SIZE_INVALID", "TAG_INVALID",
    "UNAUTHORIZED", "DENIED", "UNSUPPORTED", "TOOMANYREQUESTS", "PAGINATION_NUMBER_INVALID", "RANGE_INVALID",
}  # fmt: skip
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("CI", "").lower() == "true",
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ALICE = "Basic " + base64.b64encode(f"alice:{PASSWORDS['alice']}".encode()).decode()
BOB = "Basic " + base64.b64encode(f"bob:{PASSWORDS['bob']}".encode()).decode()

# Pieces of URL paths that have broken registries: traversal, encoded separators, NULs, case, unicode.
PATH_PIECES = [
    "a", "b9", "Z", "_", "__", "-", ".", "..", "/", "//", "%2F", "%2f", "%2E", "%2e%2e", "%00", "%5C", "%20",
    "%FF", "%C3%A9", "%25", ":", "@", ";", "~", "?", "#", "v2", "blobs", "uploads", "manifests", "tags", "list",
    "referrers", "_catalog", "sha256:", "sha256:" + "a" * 64, "sha512:" + "b" * 128, "x" * 130, "fuzz", "app",
]  # fmt: skip
HEADER_SAFE = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=60)
HEADER_LATIN1 = st.text(st.characters(min_codepoint=0x80, max_codepoint=0xFF), min_size=1, max_size=12)
# Text as JSON may carry it: any code point, lone UTF-16 surrogates (`"\ud800"`) included.
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=12) | st.text(
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3
)
# Digits that are not ASCII decimals (`str.isdigit()` holds for some, `int()` refuses them), and huge numbers.
ODD_NUMBERS = st.text(st.characters(categories=["Nd", "No"]), min_size=1, max_size=4) | st.integers(1, 6000).map(
    lambda digits: "9" * digits
)
CONFIG_BLOB = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
LAYER_BLOB = b"layer bytes"
MAX_DESCRIPTORS = 50


@dataclass
class Target:
    url: str
    raw: RawClient
    staging: Path
    workdir: Path
    s3: S3Server
    bucket: str
    config: str
    layer: str
    foreign: str  # a blob that exists only in another repository
    known: dict[str, tuple[int, str]] | None = None
    changed: set[str] = field(default_factory=set)  # keys the last request wrote or removed

    def snapshot(self) -> dict[str, tuple[int, str]]:
        found: dict[str, tuple[int, str]] = {}
        for page in self.s3.admin.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            for item in page.get("Contents", []):
                found[item["Key"]] = (item["Size"], item["ETag"])
        return found

    def send(
        self, method: str, target: str, headers: dict[str, str] | None = None, body: bytes | None = None
    ) -> RawResponse:
        """Send, then check every invariant; returns the response for more specific checks."""
        before = self.known if self.known is not None else self.snapshot()
        response = self.raw.request(method, target, {"Authorization": ALICE, **(headers or {})}, body)
        after = self.known = self.snapshot()  # nothing else writes: the next request's "before"
        self.changed = {key for key in after if after[key] != before.get(key)} | (before.keys() - after.keys())
        assert response.status < 500, (method, target, response.status, response.body[:500])
        if response.status >= 400:
            assert after == before, (method, target, "a refused request changed the bucket")
            if method != "HEAD":
                assert response.error_code in KNOWN_CODES, response.body[:300]
        assert all(key.startswith(f"{PREFIX}/") for key in after), [k for k in after if not k.startswith(PREFIX)]
        assert not folders_of_other_keys(after), (method, target, folders_of_other_keys(after))
        self.check_staging()
        return response

    def check_staging(self) -> None:
        """Only the staging layout in the staging dir (app/registry/staging.py), and nothing beside it (no `../`
        write got out)."""
        assert sorted(path.name for path in self.workdir.iterdir()) == ["staging"]
        for path in self.staging.iterdir():
            known = UPLOAD_DIR_RE.fullmatch(path.name) or path.name in (VERIFIED_MARKERS, PUBLISHED_MARKERS, DOCUMENTS)
            assert known, f"{path} is outside the staging layout"
            assert path.is_dir() and not path.is_symlink(), path

    def session(self, name: str = REPOSITORY) -> str:
        response = self.raw.request("POST", f"/v2/{name}/blobs/uploads/", {"Authorization": ALICE}, b"")
        assert response.status == 202, response.body
        return response.headers["location"]


def folders_of_other_keys(keys: dict[str, Any]) -> list[tuple[str, str]]:
    """Pairs of keys where the second lies under the first (or under its filesystem sidecar, `<key>.json`)."""
    ordered = sorted(keys)
    found = []
    for key in ordered:
        for folder in (f"{key}/", f"{key}.json/"):
            position = bisect.bisect_left(ordered, folder)
            if position < len(ordered) and ordered[position].startswith(folder):
                found.append((key, ordered[position]))
    return found


@pytest.fixture(scope="module")
def target(
    s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory, auth_files: dict[str, Path]
) -> Iterator[Target]:
    bucket = s3_server.new_bucket("fuzz")
    workdir = tmp_path_factory.mktemp("fuzz")
    config = s3_settings(
        s3_server,
        bucket,
        workdir,
        s3_prefix=PREFIX,
        auth_htpasswd=auth_files["htpasswd"],
        auth_access=auth_files["access"],
        max_manifest_bytes=MAX_MANIFEST,
        max_blob_bytes=1024 * 1024,
        delete_enabled=True,
        auth_token_enabled=True,
        auth_max_failures=0,  # the fuzzed credentials below must not lock alice out (limits: test_auth_http)
        max_manifest_descriptors=MAX_DESCRIPTORS,
    )
    with running_registry(config) as url, httpx.Client(base_url=url, auth=("alice", PASSWORDS["alice"])) as client:
        pushed = [push_blob(client, REPOSITORY, data) for data in (CONFIG_BLOB, LAYER_BLOB)]
        foreign = push_blob(client, "other/repo", b"only in other/repo")
        tagged = push_manifest(client, REPOSITORY, "v1", image_manifest(CONFIG_BLOB, [LAYER_BLOB]), OCI_MANIFEST)
        assert tagged.status_code == 201, tagged.text  # a tag and a tags list for overlapping names to aim at
        raw = RawClient(url)
        yield Target(url, raw, config.staging_dir, workdir, s3_server, bucket, pushed[0], pushed[1], foreign)
        raw.close()


def path_text() -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(PATH_PIECES), min_size=0, max_size=8).map("".join)


# paths and references -------------------------------------------------------------------------------


@FUZZ
@given(
    method=st.sampled_from(["GET", "HEAD", "PUT", "PATCH", "POST", "DELETE"]),
    name=path_text(),
    reference=path_text(),
    route=st.sampled_from(["blobs", "manifests", "blobs/uploads", "tags", "referrers", "raw"]),
)
def test_names_tags_and_digests(target: Target, method: str, name: str, reference: str, route: str) -> None:
    path = f"/v2/{name}{reference}" if route == "raw" else f"/v2/{name}/{route}/{reference}"
    target.send(method, path, body=b"")


@FUZZ
@given(
    n=st.one_of(st.none(), st.text(max_size=12), st.integers(-5, 10**12).map(str), ODD_NUMBERS),
    last=st.one_of(st.none(), path_text()),
    artifact=st.one_of(st.none(), HEADER_SAFE),
)
def test_paging_and_filters(target: Target, n: str | None, last: str | None, artifact: str | None) -> None:
    query = httpx.QueryParams({k: v for k, v in {"n": n, "last": last}.items() if v is not None})
    target.send("GET", f"/v2/_catalog?{query}")
    target.send("GET", f"/v2/{REPOSITORY}/tags/list?{query}")
    filtered = httpx.QueryParams({"artifactType": artifact} if artifact is not None else {})
    target.send("GET", f"/v2/{REPOSITORY}/referrers/{target.config}?{filtered}")


# uploads --------------------------------------------------------------------------------------------


@FUZZ
@given(
    content_range=st.one_of(
        st.none(),
        HEADER_SAFE,
        st.tuples(st.integers(-3, 2**70), st.integers(-3, 2**70)).map(lambda r: f"{r[0]}-{r[1]}"),
        st.tuples(st.integers(0, 40), st.integers(0, 40)).map(lambda r: f"bytes {r[0]}-{r[1]}/*"),
    ),
    content_length=st.one_of(st.none(), st.integers(0, 2**64).map(str), HEADER_SAFE),
    body=st.binary(max_size=64),
    digest_param=st.one_of(st.none(), path_text(), st.binary(max_size=20).map(digest)),
    method=st.sampled_from(["PATCH", "PUT"]),
)
def test_chunks_and_content_ranges(
    target: Target, content_range: str | None, content_length: str | None, body: bytes, digest_param: str | None,
    method: str,
) -> None:  # fmt: skip
    location = target.session()
    headers = {}
    if content_range is not None:
        headers["Content-Range"] = content_range
    if content_length is not None and content_length.isdigit() and int(content_length) != len(body):
        return  # a lying Content-Length desynchronises the connection itself: no server can answer that
    query = f"?digest={digest_param}" if digest_param is not None else ""
    response = target.send(method, location + query, headers, body)
    if response.status == 201:  # whatever the body was, what is stored under a digest has that digest
        stored = target.send("GET", f"/v2/{REPOSITORY}/blobs/{digest_param}")
        assert digest(stored.body) == digest_param
    target.send("DELETE", location)  # keep the staging dir small for the next examples


@FUZZ
@given(
    mount=st.one_of(st.none(), path_text(), st.sampled_from(["config", "layer", "foreign"])),
    source=st.one_of(st.none(), path_text(), st.sampled_from([REPOSITORY, "other/repo", "secret/none"])),
    name=st.sampled_from([REPOSITORY, "fuzz/second", "team/app"]),
)
def test_mount_and_from(target: Target, mount: str | None, source: str | None, name: str) -> None:
    digests = {"config": target.config, "layer": target.layer, "foreign": target.foreign}
    mount = digests.get(mount or "", mount)
    query = httpx.QueryParams({k: v for k, v in {"mount": mount, "from": source}.items() if v is not None})
    response = target.send("POST", f"/v2/{name}/blobs/uploads/?{query}")
    if response.status == 201:
        assert mount in digests.values() and source in (REPOSITORY, "other/repo")
        assert {key for key in target.changed if "/blobs/" in key} <= {f"{PREFIX}/{layout.blob(name, mount)}"}
    if response.status == 202:  # fell back to a normal session, as skopeo then does: cancel it
        assert target.send("DELETE", response.headers["location"]).status == 204


# manifests ------------------------------------------------------------------------------------------


def json_values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), ANY_TEXT)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
        max_leaves=20,
    )


@st.composite
def descriptors(draw: st.DrawFn, target: Target) -> dict[str, Any]:
    chosen = draw(st.sampled_from(["config", "layer", "foreign", "random", "bad"]))
    value = {"config": target.config, "layer": target.layer, "foreign": target.foreign}.get(chosen)
    if chosen == "random":
        value = digest(draw(st.binary(max_size=8)))
    if chosen == "bad":
        value = draw(path_text())
    descriptor: dict[str, Any] = {
        "mediaType": draw(st.sampled_from([OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, "text/plain", ""])),
        "digest": value,
        "size": draw(st.one_of(st.integers(-1, 2**65), st.sampled_from([11, 41]), st.text(max_size=3))),
    }
    if draw(st.booleans()):
        descriptor.pop(draw(st.sampled_from(sorted(descriptor))))
    return descriptor


@st.composite
def manifests(draw: st.DrawFn, target: Target) -> bytes:
    shape = draw(
        st.sampled_from(["structured", "json", "bytes", "duplicate", "duplicate-text", "deep", "huge", "many"])
    )
    if shape == "many":  # around the descriptor limit, every one of them a blob the repository holds
        document = json.loads(image_manifest(CONFIG_BLOB, [LAYER_BLOB]))
        document["layers"] *= draw(st.integers(MAX_DESCRIPTORS - 2, MAX_DESCRIPTORS * 20))
        return json.dumps(document).encode()
    if shape == "bytes":
        return draw(st.binary(max_size=200))
    if shape == "json":
        return json.dumps(draw(json_values())).encode()
    if shape == "duplicate":
        return b'{"schemaVersion":2,"mediaType":"%s","schemaVersion":2,"config":{},"layers":[]}' % OCI_MANIFEST.encode()
    if shape == "duplicate-text":  # the refusal names the key, whatever text it is
        key = json.dumps(draw(ANY_TEXT))
        return f'{{"schemaVersion":2,{key}:1,{key}:2}}'.encode()
    if shape == "deep":
        depth = draw(st.integers(100, 200_000))
        return b'{"schemaVersion":2,"layers":' + b"[" * depth + b"]" * depth + b"}"
    if shape == "huge":
        return b'{"schemaVersion":2,"annotations":{"a":"' + b"x" * (MAX_MANIFEST + draw(st.integers(1, 5000))) + b'"}}'
    document: dict[str, Any] = {
        "schemaVersion": draw(st.sampled_from([2, 1, 3, "2", None])),
        "mediaType": draw(st.sampled_from([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, "application/json", None])),
        "config": draw(descriptors(target)),
        "layers": draw(st.lists(descriptors(target), max_size=3)),
    }
    if draw(st.booleans()):
        document["manifests"] = draw(st.lists(descriptors(target), max_size=2))
    if draw(st.booleans()):
        document["subject"] = draw(descriptors(target))
    return json.dumps({k: v for k, v in document.items() if v is not None}).encode()


@FUZZ
@given(
    data=st.data(),
    content_type=st.one_of(st.none(), st.sampled_from([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST]), HEADER_SAFE),
    reference=st.one_of(st.sampled_from(["v1", "latest"]), path_text()),
)
def test_manifests(target: Target, data: st.DataObject, content_type: str | None, reference: str) -> None:
    body = data.draw(manifests(target))
    headers = {"Content-Type": content_type} if content_type is not None else {}
    response = target.send("PUT", f"/v2/{REPOSITORY}/manifests/{reference}", headers, body)
    if response.status == 201:  # a manifest writes manifests and indexes, never a blob (e.g. another repo's)
        assert not any("/blobs/" in key for key in target.changed), target.changed
        assert len(body) <= MAX_MANIFEST


@FUZZ
@given(annotations=st.dictionaries(ANY_TEXT, ANY_TEXT, max_size=3), artifact_type=st.one_of(st.none(), ANY_TEXT))
def test_referrers_with_any_text(target: Target, annotations: dict[str, str], artifact_type: str | None) -> None:
    """A valid referrer whose annotations and artifactType hold any text: refused, or listed by the referrers API."""
    subject = digest(b"a subject that need not exist")
    extra: dict[str, Any] = {"subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": 1}}
    if annotations:
        extra["annotations"] = annotations
    if artifact_type is not None:
        extra["artifactType"] = artifact_type
    body = image_manifest(CONFIG_BLOB, [LAYER_BLOB], **extra)  # json.dumps escapes lone surrogates as `\udxxx`
    response = target.send("PUT", f"/v2/{REPOSITORY}/manifests/{digest(body)}", {"Content-Type": OCI_MANIFEST}, body)
    listed = target.send("GET", f"/v2/{REPOSITORY}/referrers/{subject}")
    assert listed.status == 200
    if response.status == 201:
        assert digest(body) in [entry["digest"] for entry in listed.json()["manifests"]]
        assert target.send("DELETE", f"/v2/{REPOSITORY}/manifests/{digest(body)}").status == 202


# credentials ----------------------------------------------------------------------------------------


@FUZZ
@given(
    authorization=st.one_of(
        HEADER_SAFE,
        st.binary(max_size=40).map(lambda b: "Basic " + base64.b64encode(b).decode()),
        st.text(max_size=30).map(lambda t: "Basic " + base64.b64encode(t.encode()).decode()),
        HEADER_SAFE.map(lambda t: "Bearer " + t),
        HEADER_LATIN1.map(lambda t: "Basic " + t),
    ),
    scope=st.one_of(st.none(), HEADER_SAFE, path_text().map(lambda n: f"repository:{n}:pull,push")),
)
def test_authorization_headers_and_token_requests(target: Target, authorization: str, scope: str | None) -> None:
    response = target.send("GET", "/v2/", {"Authorization": authorization})
    assert response.status == 401 and response.error_code == "UNAUTHORIZED"
    assert response.headers["www-authenticate"].startswith(("Bearer realm=", "Basic realm="))
    query = httpx.QueryParams({"scope": scope, "service": "storj-registry"} if scope is not None else {})
    for credentials in (authorization, BOB):
        answer = target.send("GET", f"/auth/token?{query}", {"Authorization": credentials})
        if answer.status == 200:  # never more than bob's rules give him
            claims = jwt.decode(answer.json()["token"], options={"verify_signature": False})
            for entry in claims["access"]:
                assert fnmatchcase(entry["name"], "team/*") and set(entry["actions"]) <= {"pull", "push"}


# names near other repositories' keys (last: the repositories they create make every later listing longer) --


# Names built to reach into other repositories' keys: a repository's folder words after an existing name, then
# what that folder holds (its tags, its tags list, their `.json` sidecars), or the objects at the top of `v2/`.
NAME_BASES = ["", REPOSITORY, "other/repo", "fuzz", "index.html", "index.html.json"]
NAME_WORDS = ["tags", "manifests", "blobs", "referrers", "list", "list.json", "v1", "v1.json", "a", "x.y", "b-c"]


@st.composite
def overlapping_names(draw: st.DrawFn) -> str:
    words = draw(st.lists(st.sampled_from(NAME_WORDS), min_size=0, max_size=4))
    return "/".join(part for part in [draw(st.sampled_from(NAME_BASES)), *words] if part) or "a"


@FUZZ
@given(name=overlapping_names(), what=st.sampled_from(["blob", "manifest", "mount"]))
def test_names_reaching_into_other_repositories(target: Target, name: str, what: str) -> None:
    """A blob, a manifest or a mount to a name near another repository's keys: refused, or kept apart from them."""
    if what == "blob":
        target.send("POST", f"/v2/{name}/blobs/uploads/?digest={target.layer}", body=LAYER_BLOB)
    elif what == "mount":
        target.send("POST", f"/v2/{name}/blobs/uploads/?mount={target.layer}&from={REPOSITORY}", body=b"")
    else:
        target.send("POST", f"/v2/{name}/blobs/uploads/?digest={target.config}", body=CONFIG_BLOB)
        target.send("POST", f"/v2/{name}/blobs/uploads/?digest={target.layer}", body=LAYER_BLOB)
        manifest = image_manifest(CONFIG_BLOB, [LAYER_BLOB])
        target.send("PUT", f"/v2/{name}/manifests/v1", {"Content-Type": OCI_MANIFEST}, manifest)
    target.send(
        "PUT",
        f"/v2/{REPOSITORY}/manifests/v1",
        {"Content-Type": OCI_MANIFEST},
        image_manifest(CONFIG_BLOB, [LAYER_BLOB]),
    )
