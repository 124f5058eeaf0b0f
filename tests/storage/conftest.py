"""Every storage backend, for the contract suite: filesystem, memory, S3 on SeaweedFS, and S3 through a proxy that
applies Storj's rules (its per-key write limit, and no `If-Match`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.storage import Storage, open_storage
from app.storage.filesystem import FilesystemStorage
from app.storage.memory import MemoryStorage
from tests.conftest import s3_settings
from tests.support.fault_proxy import FaultProxy, no_conditional_overwrite
from tests.support.seaweed import S3Server

BACKENDS = ["filesystem", "memory", "s3", "s3-storj-rules"]


def _s3(s3_server: S3Server, tmp_path: Path, endpoint: str | None = None) -> Storage:
    extra = {"s3_endpoint": endpoint} if endpoint else {}
    storage = open_storage(s3_settings(s3_server, s3_server.new_bucket("contract"), tmp_path, **extra))
    storage.probe_conditional_overwrite()  # type: ignore[attr-defined]
    return storage


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "filesystem":
        yield FilesystemStorage(tmp_path / "data")
    elif request.param == "memory":
        yield MemoryStorage()
    elif request.param == "s3":
        yield _s3(request.getfixturevalue("s3_server"), tmp_path)
    else:
        s3_server = request.getfixturevalue("s3_server")
        # No write limit here: the contract's racing writers would meet it by design (tested on its own).
        with FaultProxy(s3_server.endpoint) as proxy:
            proxy.add(no_conditional_overwrite())
            yield _s3(s3_server, tmp_path, proxy.endpoint)
