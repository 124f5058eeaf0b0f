"""Fixtures of the fault tests: a fault-injecting proxy in front of the session's SeaweedFS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.settings import MiB, Settings
from tests.conftest import s3_settings
from tests.support.fault_proxy import FaultProxy
from tests.support.seaweed import S3Server

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


def proxied_settings(s3_server: S3Server, bucket: str, tmp_path: Path, proxy: FaultProxy, **extra: object) -> Settings:
    """Settings of a registry that reaches the bucket only through `proxy`."""
    settings = s3_settings(s3_server, bucket, tmp_path, s3_part_size=PART_SIZE, **extra)
    return settings.model_copy(update={"s3_endpoint": proxy.endpoint})
