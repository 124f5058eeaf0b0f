"""Upstream registries for the mirror tests, and the images they hold.

- the reference registry (Debian's `docker-registry`, CNCF distribution 2.8) on 127.0.0.1, anonymous or behind
  htpasswd (Basic); it has no referrers API, so referrers are published under the tag schema (`sha256-<hex>`),
  as oras does for such registries;
- this service itself with token auth, for the docker token flow and the referrers API.

Each is filled with skopeo from the test image generator (`tests.support.images`) plus an artifact pushed by
hand whose `subject` is the single image.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.e2e.clients import skopeo_copy
from tests.security.tokenflow import TokenAuth
from tests.support.daemons import die_with_parent
from tests.support.images import Image, Index, make_layer, write_image, write_index
from tests.support.pushing import OCI_INDEX, OCI_MANIFEST, descriptor, digest
from tests.support.tools import free_port, require_tool

READY_TIMEOUT_S = 30.0
USER, PASSWORD = "mirror", "upstream-secret"
EMPTY_CONFIG = b"{}"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
SBOM_TYPE = "application/spdx+json"


@dataclass(frozen=True)
class Content:
    """What an upstream holds: `team/app:v1` (one image), `team/multi:v1` (two platforms), an SBOM of app:v1."""

    image: Image
    index: Index
    sbom: bytes  # an artifact manifest whose subject is `image`
    versions: dict[str, str]  # team/versions: tag -> manifest digest

    @property
    def sbom_digest(self) -> str:
        return digest(self.sbom)


@dataclass
class Upstream:
    address: str  # 127.0.0.1:PORT
    credentials: tuple[str, str] | None
    process: subprocess.Popen[bytes] | None = None
    token_flow: bool = False

    def client(self) -> httpx.Client:
        """For pushing by hand: Basic credentials, or the token flow."""
        auth: httpx.Auth | None = None
        if self.credentials:
            auth = TokenAuth(*self.credentials) if self.token_flow else httpx.BasicAuth(*self.credentials)
        return httpx.Client(base_url=f"http://{self.address}", auth=auth, timeout=30)

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def start_reference(workdir: Path, htpasswd: Path | None = None) -> Upstream:
    """`docker-registry serve` on a free loopback port, storing on local disk, optionally behind htpasswd."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "error", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(workdir / "data")},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": "mirror-test-secret"},
    }
    if htpasswd is not None:
        config["auth"] = {"htpasswd": {"realm": "upstream", "path": str(htpasswd)}}
    (workdir / "config.yml").write_text(json.dumps(config))  # JSON is YAML
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    log = (workdir / "registry.log").open("ab")
    process = subprocess.Popen(
        [require_tool("docker-registry"), "serve", str(workdir / "config.yml")],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=die_with_parent,  # a test run killed outright leaves no registry behind
    )
    upstream = Upstream(f"127.0.0.1:{port}", (USER, PASSWORD) if htpasswd else None, process)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"http://{upstream.address}/v2/", timeout=2).status_code in (200, 401):
                return upstream
        if time.monotonic() > deadline or process.poll() is not None:
            upstream.stop()
            raise RuntimeError(f"docker-registry did not start; see {workdir / 'registry.log'}")
        time.sleep(0.1)


def fill(upstream: Upstream, work: Path, referrers_api: bool) -> Content:
    """Push the test content with skopeo (and the SBOM by hand); `referrers_api`: the registry keeps the index."""
    creds = ["--dest-creds", ":".join(upstream.credentials)] if upstream.credentials else []
    host = upstream.address
    image = write_image(work / "app", "v1", [make_layer(11, 40_000), make_layer(12, 3_000)])
    skopeo_copy(f"oci:{work / 'app'}:v1", f"docker://{host}/team/app:v1", "--preserve-digests", *creds)
    index = write_index(work / "multi", "v1", [("linux", "amd64"), ("linux", "arm64")], layer_size=20_000, seed=30)
    skopeo_copy(f"oci:{work / 'multi'}:v1", f"docker://{host}/team/multi:v1", "--all", "--preserve-digests", *creds)
    versions = {}
    for seed, tag in enumerate(["1.0.0", "1.2.0", "v1.10.1", "2.0.0", "2.1.0-rc1", "latest"]):
        pushed = write_image(work / "versions", tag, [make_layer(100 + seed, 500)])
        target = f"docker://{host}/team/versions:{tag}"
        skopeo_copy(f"oci:{work / 'versions'}:{tag}", target, "--preserve-digests", *creds)
        versions[tag] = pushed.manifest_digest
    with upstream.client() as client:
        sbom = push_sbom(client, "team/app", image, referrers_api)
    return Content(image, index, sbom, versions)


def push_sbom(client: httpx.Client, name: str, subject: Image, referrers_api: bool) -> bytes:
    """An SBOM artifact referring to `subject`; without a referrers API, also the `sha256-<hex>` tag index."""
    layer = b'{"spdxVersion": "SPDX-2.3", "name": "app"}'
    for blob in (EMPTY_CONFIG, layer):
        started = client.post(f"/v2/{name}/blobs/uploads/")
        assert started.status_code == 202, started.text
        location = started.headers["Location"]  # distribution's carries a `_state` query to keep
        separator = "&" if "?" in location else "?"
        done = client.put(f"{location}{separator}digest={digest(blob)}", content=blob)
        assert done.status_code == 201, done.text
    sbom = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": SBOM_TYPE,
            "config": descriptor(EMPTY_TYPE, EMPTY_CONFIG),
            "layers": [descriptor(SBOM_TYPE, layer)],
            "subject": descriptor(OCI_MANIFEST, subject.manifest_bytes),
        }
    ).encode()
    put = client.put(f"/v2/{name}/manifests/{digest(sbom)}", content=sbom, headers={"Content-Type": OCI_MANIFEST})
    assert put.status_code == 201, put.text
    if not referrers_api:
        entry = descriptor(OCI_MANIFEST, sbom, artifactType=SBOM_TYPE)
        fallback = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}).encode()
        tag = subject.manifest_digest.replace(":", "-")
        put = client.put(f"/v2/{name}/manifests/{tag}", content=fallback, headers={"Content-Type": OCI_INDEX})
        assert put.status_code == 201, put.text
    return sbom


@contextlib.contextmanager
def reference_upstream(workdir: Path, htpasswd: Path | None = None) -> Iterator[Upstream]:
    upstream = start_reference(workdir, htpasswd)
    try:
        yield upstream
    finally:
        upstream.stop()
