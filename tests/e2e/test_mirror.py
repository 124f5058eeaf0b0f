"""`storj-registry copy` of a genuine `docker save` archive and of an OCI index, pulled by docker and ctr.

No service on the path: the copy writes the bucket, the clients pull from the linksharing stand-in over it.
"""

from __future__ import annotations

import hashlib
import io
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from app.cli import main
from app.settings import Settings
from tests.e2e.clients import docker_digest, skopeo
from tests.e2e.conftest import Endpoints
from tests.mirror.conftest import pulled_digest, settings_environment
from tests.support.daemons import Daemon
from tests.support.images import make_layer, oci_ref, write_image, write_index

pytestmark = pytest.mark.e2e


def copy(settings: Settings, monkeypatch: pytest.MonkeyPatch, *args: str) -> str:
    """`storj-registry copy ARGS` with the bucket's settings in the environment; its summary."""
    for name, value in settings_environment(settings).items():
        monkeypatch.setenv(name, value)
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(io.StringIO()):
        status = main(["copy", *args])
    assert status == 0, out.getvalue()
    return out.getvalue()


def test_docker_save_archive_copied_then_pulled_by_docker_and_ctr(
    dockerd: Daemon,
    containerd: Daemon,
    endpoints: Endpoints,
    e2e_settings: Settings,
    work: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built = work / "mirror-build"
    write_image(built, "v1", [make_layer(4001, 8192), make_layer(4002, 512)])
    skopeo("copy", oci_ref(built, "v1"), f"docker-archive:{work / 'mirror-load.tar'}:ci/app:v1")
    dockerd.run("load", "--input", str(work / "mirror-load.tar"))
    image_id = dockerd.run("image", "inspect", "--format", "{{.Id}}", "ci/app:v1").strip()
    saved = work / "mirror-saved.tar"
    dockerd.run("save", "--output", str(saved), "ci/app:v1")  # the engine's own archive format
    raw = skopeo("inspect", "--raw", f"docker-archive:{saved}").encode()
    expected = "sha256:" + hashlib.sha256(raw).hexdigest()

    summary = copy(e2e_settings, monkeypatch, f"docker-archive:{saved}", "e2e/mirror-saved")
    assert f"-> e2e/mirror-saved:v1 {expected}" in summary

    reference = f"{endpoints.pull}/e2e/mirror-saved:v1"
    assert docker_digest(dockerd.run("pull", reference)) == expected
    assert dockerd.run("image", "inspect", "--format", "{{.Id}}", reference).strip() == image_id
    dockerd.run("rmi", reference)
    containerd.run("--namespace", "mirror", "images", "pull", "--plain-http", "--snapshotter", "native", reference)
    listed = containerd.run("--namespace", "mirror", "images", "ls").splitlines()[1:]
    assert {row.split()[0]: row.split()[2] for row in listed}[reference] == expected


def test_oci_index_copied_then_pulled_by_ctr_for_its_platform(
    containerd: Daemon, endpoints: Endpoints, e2e_settings: Settings, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = work / "mirror-index"
    index = write_index(layout, "v1", [("linux", "amd64"), ("linux", "arm64")], seed=4100)
    copy(e2e_settings, monkeypatch, f"oci:{layout}:v1", "e2e/mirror-index")

    reference = f"{endpoints.pull}/e2e/mirror-index:v1"
    assert pulled_digest(endpoints.pull, "e2e/mirror-index:v1") == index.digest
    pull = ("images", "pull", "--plain-http", "--snapshotter", "native", "--all-platforms", reference)
    containerd.run("--namespace", "mirror-index", *pull)
    listed = containerd.run("--namespace", "mirror-index", "images", "ls").splitlines()[1:]
    assert {row.split()[0]: row.split()[2] for row in listed}[reference] == index.digest
