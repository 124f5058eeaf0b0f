"""`kill -9` of a real `storj-registry serve` in the middle of an upload, then a restart on the same staging dir.

The staged file is the truth about progress: after the restart `GET` on the upload reports every byte that
reached the disk, the client continues from there with `Content-Range`, and the final digest check still holds.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from app.settings import MiB
from tests.faults.conftest import service
from tests.support.pushing import digest

NAME = "crash/app"
DATA = random.Random(9).randbytes(12 * MiB + 4321)
FIRST_CHUNK = MiB + 123


def stalled_body(data: bytes, release: threading.Event) -> Iterator[bytes]:
    """Send `data`, then hang like a client whose network stalled (until `release`)."""
    for offset in range(0, len(data), 64 * 1024):
        yield data[offset : offset + 64 * 1024]
    release.wait(timeout=60)
    raise ConnectionError("the client gives up")  # the request never completes


def staged_size(staging: Path, upload_id: str) -> int:
    return (staging / upload_id / "data").stat().st_size


def test_an_upload_resumes_after_kill_9(service_env: dict[str, str], tmp_path: Path) -> None:
    log, staging = tmp_path / "service.log", Path(service_env["REGISTRY_STAGING_DIR"])
    release = threading.Event()
    with service(service_env, log) as (process, url), httpx.Client(base_url=url, timeout=30) as client:
        started = client.post(f"/v2/{NAME}/blobs/uploads/")
        location, upload_id = started.headers["Location"], started.headers["Docker-Upload-UUID"]
        first = client.patch(location, content=DATA[:FIRST_CHUNK], headers={"Content-Range": f"0-{FIRST_CHUNK - 1}"})
        assert first.status_code == 202

        def stream_the_rest() -> None:
            body = stalled_body(DATA[FIRST_CHUNK : FIRST_CHUNK + 9 * MiB], release)
            with contextlib.suppress(httpx.HTTPError, ConnectionError):  # the service dies under it
                httpx.patch(f"{url}{location}", content=body, timeout=60)

        sender = threading.Thread(target=stream_the_rest)
        sender.start()
        deadline = time.monotonic() + 20
        while staged_size(staging, upload_id) <= FIRST_CHUNK and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    release.set()
    sender.join(timeout=30)

    received = staged_size(staging, upload_id)
    assert FIRST_CHUNK < received < len(DATA)
    with service(service_env, log) as (_, url), httpx.Client(base_url=url, timeout=60) as client:
        status = client.get(location)
        assert status.status_code == 204
        assert status.headers["Range"] == f"0-{received - 1}"
        rest = client.patch(location, content=DATA[received:], headers={"Content-Range": f"{received}-{len(DATA) - 1}"})
        assert rest.status_code == 202, rest.text
        assert rest.headers["Range"] == f"0-{len(DATA) - 1}"
        finished = client.put(location, params={"digest": digest(DATA)})
        assert finished.status_code == 201, finished.text
        assert client.get(f"/v2/{NAME}/blobs/{digest(DATA)}").content == DATA
        assert not (staging / upload_id / "data").exists()  # published: only a receipt stays, for a while
