"""`storj-registry copy` from OCI layouts and archives into both backends, pulled back with skopeo."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path

from app.settings import Settings
from app.storage import open_storage
from app.tools.fsck import fsck
from tests.e2e.clients import skopeo, skopeo_copy
from tests.mirror.conftest import Run, pull_all, pulled_digest
from tests.support.images import blob_path, make_layer, write_image, write_index
from tests.support.tools import free_port


def fsck_problems(settings: Settings) -> list[str]:
    out = io.StringIO()
    fsck(open_storage(settings), out=out)
    return out.getvalue().splitlines()


def test_oci_layout_image_and_index_pull_back_byte_for_byte(
    settings: Settings, cli: Callable[..., Run], pull: str, tmp_path: Path
) -> None:
    layout = tmp_path / "build"
    image = write_image(layout, "1.0", [make_layer(1, 50_000), make_layer(2, 10)])
    index = write_index(layout, "multi", [("linux", "amd64"), ("linux", "arm64")], seed=5)

    first = cli(settings, "copy", f"oci:{layout}:1.0", "team/app")
    assert first.status == 0, first.err
    assert f"-> team/app:1.0 {image.manifest_digest}" in first.out
    second = cli(settings, "copy", f"oci:{layout}:multi", "team/app:multi")
    assert second.status == 0, second.err

    assert pulled_digest(pull, "team/app:1.0") == image.manifest_digest
    assert pulled_digest(pull, "team/app:multi") == index.digest
    for child in index.children:
        assert pulled_digest(pull, f"team/app@{child.manifest_digest}") == child.manifest_digest
    pull_all(pull, "team/app:multi", tmp_path / "back")
    assert fsck_problems(settings) == []


def test_oci_archive(settings: Settings, cli: Callable[..., Run], pull: str, tmp_path: Path) -> None:
    image = write_image(tmp_path / "layout", "v2", [make_layer(3, 2_000)])
    archive = tmp_path / "image.tar"
    skopeo_copy(f"oci:{tmp_path / 'layout'}:v2", f"oci-archive:{archive}:v2")

    run = cli(settings, "copy", "--json", f"oci-archive:{archive}", "ci/app")
    assert run.status == 0, run.err
    (job,) = run.json()["jobs"]
    assert (job["destination"], job["digest"], job["blobs_uploaded"]) == ("ci/app:v2", image.manifest_digest, 2)
    assert pulled_digest(pull, "ci/app:v2") == image.manifest_digest


def test_docker_archive_gets_the_manifest_skopeo_sees(
    settings: Settings, cli: Callable[..., Run], pull: str, tmp_path: Path
) -> None:
    """No manifest in a `docker save` archive: the one built has the bytes `skopeo inspect --raw` prints."""
    write_image(tmp_path / "layout", "v1", [make_layer(4, 9_000), make_layer(5, 100)])
    archive = tmp_path / "saved.tar"
    skopeo_copy(f"oci:{tmp_path / 'layout'}:v1", f"docker-archive:{archive}:team/saved:v1")
    expected = "sha256:" + hashlib.sha256(skopeo("inspect", "--raw", f"docker-archive:{archive}").encode()).hexdigest()

    run = cli(settings, "copy", f"docker-archive:{archive}:team/saved:v1", "team/saved")
    assert run.status == 0, run.err
    assert f"-> team/saved:v1 {expected}" in run.out
    assert pulled_digest(pull, "team/saved:v1") == expected
    pull_all(pull, "team/saved:v1", tmp_path / "back")


def test_a_corrupt_blob_fails_the_copy_and_publishes_nothing(
    settings: Settings, cli: Callable[..., Run], tmp_path: Path
) -> None:
    layout = tmp_path / "layout"
    image = write_image(layout, "v1", [make_layer(6, 5_000)])
    damaged = blob_path(layout, image.layer_digests[0])
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 0xFF
    damaged.write_bytes(bytes(data))

    run = cli(settings, "copy", f"oci:{layout}:v1", "team/broken:v1")
    assert run.status == 1
    assert "does not hash to its digest" in run.out
    storage = open_storage(settings)
    assert list(storage.list("v2/team/broken/manifests/")) == []
    assert storage.stat(f"v2/team/broken/blobs/{image.layer_digests[0]}") is None
    assert not list(settings.staging_dir.glob("*/data"))  # no session left holding bytes


def test_usage_errors_exit_2_and_missing_images_exit_1(
    settings: Settings, cli: Callable[..., Run], tmp_path: Path
) -> None:
    write_image(tmp_path / "layout", "v1", [make_layer(7, 100)])
    assert cli(settings, "copy", f"oci:{tmp_path / 'layout'}", "Bad/Name").status == 2
    assert cli(settings, "copy", f"oci:{tmp_path / 'layout'}", "x/manifests/v1").status == 2  # inside x's keys
    assert cli(settings, "copy", "ftp://example/app", "team/app").status == 2
    assert cli(settings, "copy", "--platform", "linux", f"oci:{tmp_path / 'layout'}", "team/app").status == 2
    missing = cli(settings, "copy", f"oci:{tmp_path / 'layout'}:v9", "team/app")
    assert missing.status == 1
    assert "no image named 'v9'" in missing.out
    assert cli(settings, "copy", f"oci-archive:{tmp_path / 'nothing.tar'}", "team/app").status == 1


def test_json_summary_of_a_rerun_shows_nothing_written(
    settings: Settings, cli: Callable[..., Run], tmp_path: Path
) -> None:
    write_image(tmp_path / "layout", "v1", [make_layer(8, 1_000)])
    assert cli(settings, "copy", f"oci:{tmp_path / 'layout'}:v1", "team/again").status == 0
    rerun = cli(settings, "copy", "--json", f"oci:{tmp_path / 'layout'}:v1", "team/again")
    assert rerun.status == 0
    total = rerun.json()["total"]
    assert (total["blobs_uploaded"], total["manifests_written"], total["manifests_present"]) == (0, 0, 1)
    assert json.loads(rerun.out)["jobs"][0]["ok"] is True
    plain = cli(settings, "copy", f"oci:{tmp_path / 'layout'}:v1", "team/again")
    job, total_line = plain.out.splitlines()  # a no-op says so, not "copied ... 0 uploaded"
    assert job.startswith(f"up to date oci:{tmp_path / 'layout'}:v1 -> team/again:v1 sha256:"), job
    assert total_line == "up to date: 1 image(s) already in the bucket, nothing written"


def test_an_unreachable_bucket_exits_3(cli: Callable[..., Run], tmp_path: Path) -> None:
    write_image(tmp_path / "layout", "v1", [make_layer(9, 100)])
    settings = Settings(
        storage="s3",
        s3_endpoint=f"http://127.0.0.1:{free_port()}",
        s3_bucket="gone",
        s3_access_key="key",
        s3_secret_key="secret",
        s3_max_attempts=1,
        staging_dir=tmp_path / "staging",
    )
    run = cli(settings, "copy", f"oci:{tmp_path / 'layout'}:v1", "team/app")
    assert run.status == 3
    assert "unavailable" in run.err
