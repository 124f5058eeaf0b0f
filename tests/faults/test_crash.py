"""`kill -9` of a real `storj-registry serve` in the middle of an upload, then a restart on the same staging dir.

The staged file is the truth about progress: after the restart `GET` on the upload reports every byte that
reached the disk, the client continues from there with `Content-Range`, and the final digest check still holds.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from app.settings import MiB
from tests.support.pushing import digest
from tests.support.seaweed import S3Server
from tests.support.tools import free_port

ROOT = Path(__file__).resolve().parents[2]
NAME = "crash/app"
DATA = random.Random(9).randbytes(12 * MiB + 4321)
FIRST_CHUNK = MiB + 123
STARTUP_TIMEOUT_S = 20


@contextmanager
def service(env: dict[str, str], log: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`storj-registry serve` as its own process (python -m app), until the block ends or the test kills it."""
    port = free_port()
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--port", str(port)],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(process, url, log)
        yield process, url
    finally:
        process.kill()
        process.wait(timeout=10)


def wait_until_up(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"storj-registry serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/v2/", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail(f"storj-registry serve did not answer within {STARTUP_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(params=["filesystem", "s3"])
def service_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    env = {"REGISTRY_STAGING_DIR": str(tmp_path / "staging"), "REGISTRY_DATA_DIR": str(tmp_path / "data")}
    if request.param == "filesystem":
        return {**env, "REGISTRY_STORAGE": "filesystem"}
    s3: S3Server = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("bucket")
    return {**env, **s3.registry_environment(bucket), "REGISTRY_S3_PART_SIZE": str(5 * MiB)}


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
        assert not (staging / upload_id).exists()
