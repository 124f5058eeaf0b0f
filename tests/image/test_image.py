"""The container image, built and run for real: read-only, with volumes as docs/kubernetes.md says.

A skopeo push goes through the container into a bucket on SeaweedFS and pulls back intact; the image's own
HEALTHCHECK reports healthy on the port the container serves (given by `serve --port`, not the default). Run alone
with `python3 -m pytest -m image` (root, Debian's docker.io and debootstrap: `.ci/install-tools.sh`).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.clients import skopeo_copy
from tests.support.daemons import CommandFailed, Daemon
from tests.support.images import make_layer, oci_ref, write_image
from tests.support.seaweed import S3Server
from tests.support.tools import free_port

pytestmark = pytest.mark.image

HEALTHY_TIMEOUT_S = 90.0
STAGING = "/var/lib/storj-registry/staging"


def health(docker: Daemon, container: str) -> str:
    return docker.run("inspect", "--format", "{{.State.Health.Status}}", container).strip()


def wait_healthy(docker: Daemon, container: str) -> None:
    deadline = time.monotonic() + HEALTHY_TIMEOUT_S
    while (status := health(docker, container)) != "healthy":
        assert status in ("starting", "unhealthy") and time.monotonic() < deadline, (
            status,
            docker.run("logs", container),
        )
        time.sleep(0.5)


@pytest.fixture(scope="module")
def registry_container(image: str, image_dockerd: Daemon, s3_server: S3Server) -> Iterator[tuple[str, str, str]]:
    """The image serving on a bucket: read-only root, /tmp a tmpfs, staging a named volume; (url, bucket, name)."""
    bucket = s3_server.new_bucket("image")
    port = free_port()
    name = f"registry-{uuid.uuid4().hex[:8]}"
    settings = {**s3_server.registry_environment(bucket), "REGISTRY_LISTEN_HOST": "127.0.0.1"}
    environment = [option for key, value in settings.items() for option in ("--env", f"{key}={value}")]
    image_dockerd.run(
        "run", "--detach", "--name", name, "--read-only", "--tmpfs", "/tmp", "--network", "host",
        "--volume", f"{name}-staging:{STAGING}", "--health-interval", "1s", *environment,
        image, "serve", "--port", str(port),
    )  # fmt: skip
    try:
        wait_healthy(image_dockerd, name)
        yield f"127.0.0.1:{port}", bucket, name
    finally:
        image_dockerd.run("rm", "--force", "--volumes", name)
        image_dockerd.run("volume", "rm", "--force", f"{name}-staging")


def test_the_image_is_healthy_on_the_port_it_serves(image_dockerd: Daemon, registry_container: tuple) -> None:
    _, _, container = registry_container
    checks = json.loads(image_dockerd.run("inspect", "--format", "{{json .State.Health.Log}}", container))
    assert checks and checks[-1]["ExitCode"] == 0
    configured = json.loads(image_dockerd.run("inspect", "--format", "{{json .Config}}", container))
    assert configured["User"] == "10001:10001"
    assert configured["Healthcheck"]["Test"] == ["CMD", "storj-registry", "healthcheck"]


def test_push_through_the_container_and_pull_back(
    tmp_path: Path, registry_container: tuple, s3_server: S3Server
) -> None:
    host, bucket, _ = registry_container
    source = tmp_path / "source"
    image = write_image(source, "1", [make_layer(1, 300_000), make_layer(2, 1000)])
    pushed = skopeo_copy(oci_ref(source, "1"), f"docker://{host}/image/tier:1", "--preserve-digests")
    assert pushed == image.manifest_digest
    back = tmp_path / "back"
    assert skopeo_copy(f"docker://{host}/image/tier:1", oci_ref(back, "1"), "--preserve-digests") == pushed
    keys = set(s3_server.objects(bucket, ""))
    assert {f"v2/image/tier/manifests/{pushed}", "v2/image/tier/manifests/1"} <= keys
    assert {f"v2/image/tier/blobs/{digest}" for digest in image.layer_digests} <= keys


def test_a_read_only_root_without_a_data_volume_is_one_line(image: str, image_dockerd: Daemon) -> None:
    """The default filesystem store needs its directory writable: the container says which, and exits 2."""
    with pytest.raises(CommandFailed) as refused:
        staging = f"{STAGING}:uid=10001,gid=10001"  # writable: the data directory is the one left read-only
        image_dockerd.run("run", "--rm", "--read-only", "--tmpfs", staging, "--network", "none", image)
    message = str(refused.value)
    assert " exited 2\n" in message, message  # the container's status (docker's own failures are 125)
    assert "REGISTRY_DATA_DIR: /var/lib/storj-registry/data is not a writable directory (Read-only file system)" in (
        message
    )
    assert "Traceback" not in message
