"""A `copy` killed in the middle of a blob leaves nothing half-visible, and running it again completes it.

The layer is served through a named pipe, so the test decides exactly how far the copy gets before the kill.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from app.settings import Settings
from app.storage import open_storage
from tests.conftest import s3_settings
from tests.mirror.conftest import Run, pull_side, pulled_digest, settings_environment
from tests.support.images import blob_path, make_layer, write_image
from tests.support.seaweed import S3Server

WAIT_S = 60.0
MiB = 1024 * 1024


def open_writer(fifo: Path, process: subprocess.Popen[bytes]) -> int:
    """The pipe's write end, once the copy opened it for reading."""
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO or process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the copy never read the layer (exit {process.poll()})") from exc
            time.sleep(0.02)


def wait_until(done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not done():
        assert time.monotonic() < deadline, f"the copy did not get that far: {what}"
        time.sleep(0.02)


def staged(staging: Path, size: int) -> Callable[[], bool]:
    """Whether an upload session in the staging directory holds `size` bytes."""
    return lambda: any(path.stat().st_size >= size for path in staging.glob("*/data"))


def kill_mid_blob_then_rerun(
    settings: Settings,
    cli: Callable[..., Run],
    pull: str,
    tmp_path: Path,
    layer_size: int,
    sent: int,
    reached: Callable[[], bool] | None = None,
) -> None:
    """Send `sent` bytes of the layer, kill the copy once they are staged (and `reached`), check, copy again."""
    layout = tmp_path / "layout"
    layer = make_layer(50, layer_size)
    image = write_image(layout, "v1", [make_layer(51, 1000), layer])
    fifo = blob_path(layout, image.layer_digests[1])
    fifo.unlink()
    os.mkfifo(fifo)

    env = {**os.environ, **settings_environment(settings)}
    command = [sys.executable, "-m", "app", "copy", f"oci:{layout}:v1", "team/killed"]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        writer = open_writer(fifo, process)
        os.set_blocking(writer, True)
        os.write(writer, layer[:sent])
        wait_until(staged(settings.staging_dir, sent - MiB), "bytes staged")  # whole 1 MiB batches are staged
        if reached is not None:
            wait_until(reached, reached.__doc__ or "")
        os.killpg(process.pid, signal.SIGKILL)
        os.close(writer)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    storage = open_storage(settings)
    assert list(storage.list("v2/team/killed/manifests/")) == []
    assert storage.stat("v2/team/killed/tags/list") is None
    assert storage.stat(f"v2/team/killed/blobs/{image.layer_digests[1]}") is None

    fifo.unlink()
    fifo.write_bytes(layer)
    rerun = cli(settings, "copy", f"oci:{layout}:v1", "team/killed")
    assert rerun.status == 0, rerun.out + rerun.err
    assert pulled_digest(pull, "team/killed:v1") == image.manifest_digest
    assert storage.stat(f"v2/team/killed/blobs/{image.layer_digests[1]}").size == len(layer)


def test_killed_mid_blob_then_rerun(settings: Settings, cli: Callable[..., Run], pull: str, tmp_path: Path) -> None:
    kill_mid_blob_then_rerun(settings, cli, pull, tmp_path, layer_size=3 * MiB, sent=2 * MiB)


def test_killed_after_parts_reached_the_bucket(
    s3_server: S3Server, bucket: str, cli: Callable[..., Run], tmp_path: Path
) -> None:
    """On S3 the blob's first parts are already in a multipart upload: still invisible, and the rerun completes."""
    settings = s3_settings(s3_server, bucket, tmp_path, s3_part_size=5 * MiB)
    storage = open_storage(settings)

    def part_sent() -> bool:
        """a part in the bucket"""
        return any(s3_server.admin.list_parts(Bucket=bucket, Key=key, UploadId=upload).get("Parts")
                   for key, upload, _ in storage.unfinished_multipart())  # fmt: skip

    with pull_side(settings, s3_server) as pull:
        kill_mid_blob_then_rerun(settings, cli, pull, tmp_path, layer_size=12 * MiB, sent=8 * MiB, reached=part_sent)
    assert list(storage.unfinished_multipart())  # the killed session's, left for gc to abort
