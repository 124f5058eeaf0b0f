"""`storj-registry verify-pull URL/NAME:TAG`: pull a tag through a public URL the way docker does, and check it.

The registry never serves pulls: linksharing (or a CDN) serves the bucket. Before pointing users at that URL, this
walks what a client would: `/v2/` (skopeo and podman want 200 or 401), HEAD then GET of the manifest by tag with
docker's Accept header, the same manifest by digest, each child of an index, each image's config and every
layer, streamed. It checks what clients check: Content-Types (docker takes a manifest's media type from it and
fails with "missing signature key" otherwise), every manifest's and blob's digest and size, and that the tag is
in `tags/list`. Each problem is a line on stdout saying what is wrong and why a client cares.

It reads like a client, with its own small knowledge of the formats: it does not reuse the registry's code,
so it checks the bucket rather than agreeing with whatever wrote it.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO
from urllib.parse import urlsplit

import httpx

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
INDEXES = frozenset({DOCKER_LIST, OCI_INDEX})
MANIFESTS = frozenset({DOCKER_MANIFEST, OCI_MANIFEST}) | INDEXES
ACCEPT = ", ".join((OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST))  # what docker and containerd send
DIGEST_RE = re.compile(r"(sha256):([a-f0-9]{64})|(sha512):([a-f0-9]{128})")
REFERENCE_RE = re.compile(
    r"(?P<name>[a-z0-9][a-z0-9._/-]*?)(?::(?P<tag>[\w][\w.-]{0,127})|@(?P<digest>[a-z0-9]+:[a-f0-9]+))"
)
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
TIMEOUT_SECONDS = 60.0
CHUNK = 1024 * 1024


class UsageError(ValueError):
    """The reference cannot be understood."""


@dataclass(frozen=True)
class Target:
    base: str  # scheme://host[:port][/prefix]
    name: str
    reference: str  # a tag or a digest

    @property
    def image(self) -> str:
        separator = "@" if ":" in self.reference else ":"
        return f"{self.name}{separator}{self.reference}"


def parse_target(text: str) -> Target:
    """`[http[s]://]HOST[:PORT][/PREFIX]/NAME:TAG` or `…/NAME@DIGEST`; https unless the host is a loopback one."""
    if "://" not in text:
        host = text.split("/", 1)[0]
        text = f"{'http' if host.split(':')[0] in LOOPBACK else 'https'}://{text}"
    url = urlsplit(text)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise UsageError(f"{text!r} is not URL/NAME:TAG")
    found = REFERENCE_RE.fullmatch(url.path.lstrip("/"))
    if found is None:
        raise UsageError(f"{text!r}: expected a repository name and :TAG or @DIGEST after the host")
    name, reference = found["name"], found["tag"] or found["digest"]
    return Target(f"{url.scheme}://{url.netloc}", name, reference)


@dataclass
class Findings:
    problems: list[str] = field(default_factory=list)
    manifests: int = 0
    blobs: int = 0
    bytes_read: int = 0
    checked_blobs: set[str] = field(default_factory=set)

    def summary(self) -> str:
        return (
            f"{self.manifests} manifest(s), {self.blobs} blob(s) ({self.bytes_read} bytes) read: "
            f"{len(self.problems)} problem(s)"
        )


class Puller:
    """One pull, request by request, noting each problem instead of stopping at the first."""

    def __init__(self, target: Target, client: httpx.Client, out: TextIO) -> None:
        self.target = target
        self.client = client
        self.out = out
        self.found = Findings()

    def problem(self, url: str, words: str) -> None:
        self.found.problems.append(words)
        print(f"PROBLEM {url} {words}", file=self.out, flush=True)

    def url(self, path: str) -> str:
        return f"{self.target.base}/v2/{self.target.name}/{path}"

    def run(self) -> Findings:
        self.check_ping()
        manifest = self.check_tag()
        if manifest is None:
            return self.found
        self.check_tree(manifest)
        if ":" not in self.target.reference:
            self.check_tags_list()
        return self.found

    # the steps ------------------------------------------------------------------------------------------

    def check_ping(self) -> None:
        url = f"{self.target.base}/v2/"
        status = self.client.get(url).status_code
        if status not in (200, 401):
            self.problem(url, f"answered {status}: skopeo and podman need 200 or 401 here (is v2/index.html stored?)")

    def check_tag(self) -> dict[str, Any] | None:
        """HEAD then GET by the reference, then GET by the digest the bytes hash to: the same bytes and type."""
        url = self.url(f"manifests/{self.target.reference}")
        head = self.client.head(url, headers={"Accept": ACCEPT})
        response = self.client.get(url, headers={"Accept": ACCEPT})
        if response.status_code != 200:
            self.problem(url, f"answered {response.status_code}: there is no manifest to pull under this reference")
            return None
        if head.status_code != 200:
            self.problem(url, f"HEAD answered {head.status_code}: docker and containerd resolve the tag with it")
        manifest = self.manifest_of(url, response, expected_digest=self.digest_named())
        if manifest is None:
            return None
        digest = sha256(response.content)
        if head.status_code == 200 and head.headers.get("content-type") != response.headers.get("content-type"):
            self.problem(url, "HEAD and GET answer different Content-Types")
        if ":" not in self.target.reference:
            self.check_by_digest(digest, response)
        return manifest

    def digest_named(self) -> str | None:
        return self.target.reference if ":" in self.target.reference else None

    def check_by_digest(self, digest: str, by_tag: httpx.Response) -> None:
        url = self.url(f"manifests/{digest}")
        response = self.client.get(url, headers={"Accept": ACCEPT})
        if response.status_code != 200:
            self.problem(url, f"answered {response.status_code}: docker pulls the manifest by digest after the tag")
        elif response.content != by_tag.content:
            self.problem(url, "differs from the manifest under the tag (it must be the same bytes)")
        elif response.headers.get("content-type") != by_tag.headers.get("content-type"):
            self.problem(url, "its Content-Type differs from the tag's")

    def check_tree(self, manifest: dict[str, Any]) -> None:
        """An index's children, then each image's config and layers."""
        for child in manifest.get("manifests") or []:
            url = self.url(f"manifests/{child.get('digest')}")
            response = self.client.get(url, headers={"Accept": ACCEPT})
            if response.status_code != 200:
                self.problem(url, f"answered {response.status_code}: a child of the index (a platform) is missing")
                continue
            image = self.manifest_of(url, response, child.get("digest"), child.get("size"), child.get("mediaType"))
            if image is not None:
                self.check_blobs(image)
        self.check_blobs(manifest)

    def check_blobs(self, manifest: dict[str, Any]) -> None:
        config = manifest.get("config")
        for descriptor in [config] if isinstance(config, dict) else []:
            self.check_blob(descriptor)
        for layer in manifest.get("layers") or []:
            if isinstance(layer, dict) and not layer.get("urls"):  # a foreign layer lives elsewhere
                self.check_blob(layer)

    def check_blob(self, descriptor: dict[str, Any]) -> None:
        digest, size = str(descriptor.get("digest")), descriptor.get("size")
        if digest in self.found.checked_blobs:
            return
        self.found.checked_blobs.add(digest)
        url = self.url(f"blobs/{digest}")
        with self.client.stream("GET", url) as response:
            if response.status_code != 200:
                self.problem(url, f"answered {response.status_code}: the pull fails on this blob")
                return
            read, actual = hash_stream(digest, response.iter_bytes(CHUNK))
        self.found.blobs += 1
        self.found.bytes_read += read
        if actual is None:
            self.problem(url, f"{digest} is not a digest a client can check")
        elif read != size:
            self.problem(url, f"{read} bytes, where the manifest says {size}: clients fail on the length")
        elif actual != digest:
            self.problem(url, f"the bytes hash to {actual}: clients fail with 'digest did not match'")

    def check_tags_list(self) -> None:
        url = self.url("tags/list")
        response = self.client.get(url)
        try:
            tags = response.json().get("tags") or [] if response.status_code == 200 else None
        except ValueError:
            tags = None
        if tags is None:
            self.problem(url, f"answered {response.status_code} without a tags list: `skopeo list-tags` fails")
        elif self.target.reference not in tags:
            self.problem(url, f"does not list {self.target.reference}: listings and the catalog page miss it")

    # checks shared by every manifest --------------------------------------------------------------------

    def manifest_of(
        self,
        url: str,
        response: httpx.Response,
        expected_digest: str | None = None,
        size: int | None = None,
        media_type: str | None = None,
    ) -> dict[str, Any] | None:
        """The parsed manifest, each problem with its Content-Type, digest or size noted."""
        self.found.manifests += 1
        served = response.headers.get("content-type", "").split(";")[0].strip()
        try:
            manifest = json.loads(response.content)
        except ValueError:
            self.problem(url, f"is not JSON (Content-Type {served or 'none'}): not a manifest")
            return None
        if not isinstance(manifest, dict):
            self.problem(url, "is not a JSON object: not a manifest")
            return None
        declared = manifest.get("mediaType") or media_type
        if served not in MANIFESTS:
            self.problem(url, f"is served as {served or 'no type'}: docker takes the media type from Content-Type")
        elif declared and served != declared:
            self.problem(url, f"is served as {served} but is a {declared}: clients parse it as the wrong kind")
        self.check_digest(url, response.content, expected_digest, size)
        return manifest

    def check_digest(self, url: str, body: bytes, expected: str | None, size: int | None) -> None:
        if expected is not None:
            _, actual = hash_stream(expected, iter([body]))
            if actual != expected:
                self.problem(url, f"the bytes hash to {actual}, not {expected}: clients refuse it")
        if size is not None and len(body) != size:
            self.problem(url, f"{len(body)} bytes, where the index says {size}")


def sha256(body: bytes) -> str:
    return f"sha256:{hashlib.sha256(body).hexdigest()}"


def hash_stream(digest: str, chunks: Iterator[bytes]) -> tuple[int, str | None]:
    """Bytes read and what they hash to with `digest`'s algorithm (None: not a digest one can check)."""
    found = DIGEST_RE.fullmatch(digest)
    algorithm = found and (found[1] or found[3])
    hasher = hashlib.new(algorithm) if algorithm else None
    read = 0
    for chunk in chunks:
        read += len(chunk)
        if hasher is not None:
            hasher.update(chunk)
    return read, f"{algorithm}:{hasher.hexdigest()}" if hasher is not None else None


def verify_pull(text: str, *, tls_verify: bool = True, out: TextIO | None = None) -> Findings:
    """Pull `text` (URL/NAME:TAG) as docker would; raises UsageError or httpx.HTTPError (unreachable)."""
    target = parse_target(text)
    with httpx.Client(follow_redirects=True, verify=tls_verify, timeout=TIMEOUT_SECONDS) as client:
        return Puller(target, client, out or sys.stdout).run()
