"""SIGTERM on a real `storj-registry serve`: the drain refuses new uploads, the commit in flight still lands.

Timeline: a PUT that finishes an upload is streaming its body when SIGTERM arrives. During the drain a new POST is
refused (503 + Retry-After) and /readyz says 503; after it the listener is closed. The PUT's last bytes arrive
after that, and its blob is still committed to the bucket before the process exits.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.ops._service import ServiceProcess, s3_environment
from tests.support.pushing import digest
from tests.support.seaweed import S3Server

DRAIN_SECONDS = 3.0  # long enough that the requests made during the drain land in it on a loaded machine
BLOB = b"committed while the replica stops " * 30_000


def slow_body(first_part_sent: threading.Event, listener_closed: threading.Event) -> Iterator[bytes]:
    half = len(BLOB) // 2
    yield BLOB[:half]
    first_part_sent.set()
    listener_closed.wait(timeout=15)
    yield BLOB[half:]


def wait_until_refused(url: str, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/healthz", timeout=1)
        except (httpx.ConnectError, httpx.ReadError):  # refused, or reset: accepted just before the listener closed
            return
        time.sleep(0.05)
    raise AssertionError("the listener was not closed after the drain")


def test_sigterm_drains_then_finishes_the_commit_in_flight(s3_server: S3Server, bucket: str, tmp_path: Path) -> None:
    environment = s3_environment(
        s3_server,
        bucket,
        tmp_path / "staging",
        REGISTRY_LOG_FORMAT="json",
        REGISTRY_SHUTDOWN_DRAIN_SECONDS=str(DRAIN_SECONDS),
        REGISTRY_SHUTDOWN_GRACE_SECONDS="20",
    )
    service = ServiceProcess(tmp_path / "service", environment)
    try:
        service.wait_ready()
        location = httpx.post(f"{service.url}/v2/ops/shutdown/blobs/uploads/").headers["Location"]
        first_part_sent, listener_closed = threading.Event(), threading.Event()
        finished: list[httpx.Response] = []

        def finish_upload() -> None:
            body = slow_body(first_part_sent, listener_closed)
            url = f"{service.url}{location}?digest={digest(BLOB)}"
            finished.append(httpx.put(url, content=body, timeout=30, headers={"X-Request-Id": "in-flight"}))

        uploader = threading.Thread(target=finish_upload)
        uploader.start()
        assert first_part_sent.wait(timeout=10)
        service.terminate()
        time.sleep(0.3)  # the drain is noticed within one uvicorn tick (0.1 s)

        refused = httpx.post(f"{service.url}/v2/ops/shutdown/blobs/uploads/")
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "1"
        assert refused.json()["errors"][0]["code"] == "UNAVAILABLE"
        assert httpx.get(f"{service.url}/readyz").json()["checks"]["shutdown"].startswith("draining")

        wait_until_refused(service.url, DRAIN_SECONDS + 5)
        listener_closed.set()
        uploader.join(timeout=30)
        assert finished and finished[0].status_code == 201, finished
        assert service.wait() in (0, -15)
    finally:
        service.stop()

    key = f"v2/ops/shutdown/blobs/{digest(BLOB)}"
    assert s3_server.objects(bucket)[key].size == len(BLOB)
    lines = [json.loads(line) for line in service.log().splitlines()]  # every line is JSON, uvicorn's included
    access = [line for line in lines if line["logger"] == "storj_registry.access"]
    committed = next(line for line in access if line["request_id"] == "in-flight")
    assert (committed["status"], committed["digest"], committed["bytes_in"]) == (201, digest(BLOB), len(BLOB))
    assert any(line["status"] == 503 for line in access)
    assert not any(line["logger"] == "uvicorn.access" for line in lines)
    assert s3_server.secret_key not in service.log()
