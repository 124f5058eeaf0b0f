"""`storj-registry preview` as a user runs it: a store filled by `storj-registry copy`, served as linksharing would,
pulled by skopeo and by docker, checked by `verify-pull`; Ctrl-C ends it with exit 0."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.clients import docker_digest, skopeo_copy
from tests.ops.test_front_door import environment
from tests.support.daemons import Daemon
from tests.support.images import Image, make_layer, oci_ref, write_image
from tests.support.tools import free_port

pytestmark = pytest.mark.e2e
NAME = "demo/preview"


def storj_registry(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args], cwd=cwd, env=environment(), capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("preview-source")


@pytest.fixture(scope="module")
def image(source: Path) -> Image:
    return write_image(source, "1", [make_layer(3001, 30_000), make_layer(3002, 99)])


@pytest.fixture(scope="module")
def preview(source: Path, image: Image, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`storj-registry preview` over a filesystem store filled by `copy`: its `host:port`."""
    workdir = tmp_path_factory.mktemp("preview")
    copied = storj_registry(workdir, "copy", oci_ref(source, "1"), f"{NAME}:1")
    assert copied.returncode == 0, copied.stderr
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "preview", "--port", str(port)],
        cwd=workdir,
        env=environment(),
        stderr=subprocess.PIPE,
        text=True,
    )
    host = f"127.0.0.1:{port}"
    try:
        wait_until_serving(f"http://{host}/v2/")
        yield host
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    assert "preview: stopped" in stderr and "Traceback" not in stderr
    assert f"GET /v2/{NAME}/manifests/1 200" in stderr  # a line per request


def wait_until_serving(url: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer")


def test_skopeo_pulls_from_the_preview(preview: str, image: Image, tmp_path: Path) -> None:
    pulled = oci_ref(tmp_path / "pulled", "1")
    assert skopeo_copy(f"docker://{preview}/{NAME}:1", pulled, "--preserve-digests") == image.manifest_digest


def test_docker_pulls_from_the_preview(preview: str, image: Image, dockerd: Daemon) -> None:
    reference = f"{preview}/{NAME}:1"
    assert docker_digest(dockerd.run("pull", reference)) == image.manifest_digest
    inspected = json.loads(dockerd.run("image", "inspect", reference))
    assert inspected[0]["Id"] == image.config_digest
    dockerd.run("rmi", reference)


def test_verify_pull_through_the_preview(preview: str, tmp_path: Path) -> None:
    done = storj_registry(tmp_path, "verify-pull", f"{preview}/{NAME}:1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == ""
    assert "1 manifest(s), 3 blob(s)" in done.stderr
