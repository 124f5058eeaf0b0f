"""The end-to-end tier: genuine clients push to the service on SeaweedFS and pull from a static server over the bucket.

One bucket, one service, one static server, one dockerd and one containerd serve the whole session (each test
uses its own repositories), so the tier costs a few daemon start-ups, not one per test.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.settings import Settings
from tests.conftest import s3_settings
from tests.e2e.bucket import BucketLayout
from tests.support.daemons import Daemon, start_containerd, start_dockerd
from tests.support.registry_server import running_registry
from tests.support.seaweed import S3Server
from tests.support.static_server import StaticBucketServer


@dataclass(frozen=True)
class Endpoints:
    """Where clients push (`push`, the service) and pull (`pull`, the static server), as `host:port`."""

    push: str
    pull: str
    service_url: str
    static: StaticBucketServer


@pytest.fixture(scope="session")
def e2e_bucket(s3_server: S3Server) -> str:
    return s3_server.new_bucket("e2e")


@pytest.fixture(scope="session")
def layout(s3_server: S3Server, e2e_bucket: str) -> BucketLayout:
    return BucketLayout(s3_server.client(), e2e_bucket)


@pytest.fixture(scope="session")
def static(s3_server: S3Server, e2e_bucket: str) -> Iterator[StaticBucketServer]:
    with StaticBucketServer(s3_server, e2e_bucket) as server:
        yield server


@pytest.fixture(scope="session")
def e2e_settings(
    s3_server: S3Server, e2e_bucket: str, static: StaticBucketServer, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """A production-like configuration: blob GETs through the service redirect to the public (static) URL."""
    service = tmp_path_factory.mktemp("e2e-service")
    return s3_settings(s3_server, e2e_bucket, service, public_url=static.url, publish_in_background=True)


@pytest.fixture(scope="session")
def endpoints(e2e_settings: Settings, static: StaticBucketServer) -> Iterator[Endpoints]:
    with running_registry(e2e_settings) as url:
        yield Endpoints(url.removeprefix("http://"), static.url.removeprefix("http://"), url, static)


@pytest.fixture(scope="session")
def dockerd() -> Iterator[Daemon]:
    daemon = start_dockerd()
    yield daemon
    daemon.stop()


@pytest.fixture(scope="session")
def containerd() -> Iterator[Daemon]:
    daemon = start_containerd()
    yield daemon
    daemon.stop()


@pytest.fixture(scope="session")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Scratch space for image layouts and archives, shared by the session's fixtures."""
    return tmp_path_factory.mktemp("e2e-work")
