"""Abandoned upload sessions are purged after `REGISTRY_UPLOAD_MAX_AGE_SECONDS`; sessions in use are not."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.conftest import filesystem_settings
from tests.support.pushing import digest
from tests.support.registry_server import running_registry

MAX_AGE = 1.0
CHUNK = b"x" * 1000


def sessions(staging: Path) -> list[str]:
    """The sessions holding bytes (a published one keeps only its receipt, for a while)."""
    return sorted(path.name for path in staging.iterdir() if (path / "data").exists())


def test_abandoned_uploads_are_purged_and_active_ones_kept(tmp_path: Path) -> None:
    settings = filesystem_settings(tmp_path, upload_max_age_seconds=MAX_AGE)
    with running_registry(settings) as url, httpx.Client(base_url=url, timeout=30) as client:
        abandoned = client.post("/v2/demo/blobs/uploads/").headers["Location"]
        active = client.post("/v2/demo/blobs/uploads/").headers["Location"]
        assert len(sessions(settings.staging_dir)) == 2
        sent = b""
        deadline = time.monotonic() + 2.5 * MAX_AGE
        while time.monotonic() < deadline:  # keep one session busy well past the max age
            response = client.patch(active, content=CHUNK)
            assert response.status_code == 202, response.text
            sent += CHUNK
            time.sleep(MAX_AGE / 5)

        gone = client.get(abandoned)
        assert gone.status_code == 404
        assert gone.json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"
        assert client.put(active, params={"digest": digest(sent)}).status_code == 201
        assert sessions(settings.staging_dir) == []
