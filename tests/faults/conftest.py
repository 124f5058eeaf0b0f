"""Fixtures of the fault tests: a fault-injecting proxy in front of the session's SeaweedFS, and the service as a
process of its own (to be killed)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from app.settings import MiB, Settings
from tests.conftest import proxied_settings
from tests.support.fault_proxy import FaultProxy
from tests.support.seaweed import S3Server
from tests.support.tools import free_port

ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 20
PART_SIZE = 5 * MiB  # the S3 minimum: blobs just over it take the multipart path while staying small


@pytest.fixture(scope="module")
def proxy(s3_server: S3Server) -> Iterator[FaultProxy]:
    with FaultProxy(s3_server.endpoint) as running:
        yield running


@pytest.fixture
def faults(proxy: FaultProxy) -> Iterator[FaultProxy]:
    """The proxy with no fault and no request recorded, left that way for the next test."""
    proxy.clear()
    yield proxy
    proxy.clear()


def faulty_settings(s3_server: S3Server, bucket: str, tmp_path: Path, proxy: FaultProxy, **extra: object) -> Settings:
    """Settings of a registry that reaches the bucket only through `proxy`, with parts small enough to test."""
    return proxied_settings(s3_server, bucket, tmp_path, proxy, s3_part_size=PART_SIZE, **extra)


@contextmanager
def service(env: dict[str, str], log: Path, module: str = "app") -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`storj-registry serve` as its own process (python -m app), until the block ends or the test kills it."""
    port = free_port()
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", module, "serve", "--port", str(port)],
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
