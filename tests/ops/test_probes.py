"""`/healthz` and `/readyz` against real storage: ready on both backends, 503 naming the failed check otherwise."""

from __future__ import annotations

import asyncio
import shutil
import socket
from pathlib import Path

import httpx
import pytest

from app.api.health import Readiness
from app.settings import Settings
from app.storage import StorageFault
from app.storage.s3 import S3Storage
from tests.conftest import filesystem_settings
from tests.ops.conftest import sample, scrape, total
from tests.support.registry_server import running_registry
from tests.support.tools import free_port

BLOB = "/v2/ops/probe/blobs/sha256:" + "0" * 64


def test_ready_with_storage_and_staging_in_order(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"storage": "ok", "staging": "ok"}}


def unreachable_s3(tmp_path: Path, endpoint: str, **extra: object) -> Settings:
    return Settings(
        storage="s3",
        s3_endpoint=endpoint,
        s3_bucket="nowhere",
        s3_access_key="key",
        s3_secret_key="secret",
        staging_dir=tmp_path / "staging",
        **extra,
    )


def test_unreachable_s3_makes_the_replica_unready_and_is_counted(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    settings = unreachable_s3(tmp_path, closed, s3_max_attempts=2)
    with running_registry(settings) as url, httpx.Client(base_url=url, timeout=30) as client:
        before = scrape(client)
        assert client.get("/healthz").status_code == 200  # liveness never depends on the storage
        ready = client.get("/readyz")
        assert ready.status_code == 503
        checks = ready.json()["checks"]
        assert checks["staging"] == "ok"
        assert checks["storage"] == "the registry cannot connect to its S3 endpoint"  # the log's words
        head = client.head(BLOB)
        assert head.status_code == 503 and head.headers["Retry-After"]
        after = scrape(client)
    # The HEAD's requests to the store (it makes itself known to gc runs and reads their announcement before it
    # relies on anything) are retried and counted as failed; the readiness check asks once.
    assert total(after, "registry_storage_retries_total") > total(before, "registry_storage_retries_total")
    assert sample(after, "registry_storage_errors_total", operation="HeadBucket") > sample(
        before, "registry_storage_errors_total", operation="HeadBucket"
    )
    assert total(after, "registry_storage_errors_total") > total(before, "registry_storage_errors_total") + 1
    assert sample(after, "registry_storage_faults_total") == sample(before, "registry_storage_faults_total") + 1


def test_missing_staging_directory_makes_the_replica_unready(tmp_path: Path) -> None:
    settings = filesystem_settings(tmp_path)
    with running_registry(settings) as url:
        shutil.rmtree(settings.staging_dir)
        ready = httpx.get(f"{url}/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["staging"] == "the staging directory is not writable (No such file or directory)"
    assert ready.json()["checks"]["storage"] == "ok"


def test_a_hanging_storage_check_answers_in_time_and_is_not_started_twice(tmp_path: Path) -> None:
    """An S3 endpoint that accepts connections and never answers: each probe gets "no answer" within its limit."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        settings = unreachable_s3(tmp_path, endpoint, s3_max_attempts=1)
        readiness = Readiness(S3Storage(settings), tmp_path, timeout=0.3)

        async def probe_twice() -> tuple[dict[str, str], dict[str, str], bool]:
            first = await readiness.run()
            running = readiness._running["storage"]
            second = await readiness.run()
            same_check = running is readiness._running["storage"] and not running.done()
            silent.close()  # resets the pending connection, so the abandoned check ends
            with pytest.raises(StorageFault):
                await asyncio.wait_for(running, 10)
            return first, second, same_check

        first, second, same_check = asyncio.run(probe_twice())
    assert first == second == {"storage": "no answer within 0.3 s", "staging": "ok"}
    assert same_check


@pytest.mark.parametrize("settings", ["filesystem"], indirect=True)
def test_probes_are_not_access_logged_at_info(client: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="storj_registry.access")
    client.get("/healthz")
    client.get("/readyz")
    client.get("/v2/")
    assert [record.route for record in caplog.records] == ["/v2/"]
