"""Shared fixtures: a real SeaweedFS S3 server, settings for each backend, and a running registry."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.settings import Settings
from tests.support.fault_proxy import FaultProxy
from tests.support.registry_server import running_registry
from tests.support.seaweed import S3Server, start_seaweed

BACKENDS = ["filesystem", "s3"]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_seaweed(tmp_path_factory.mktemp("seaweed"))
    yield server
    server.stop()


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    return s3_server.new_bucket("reg")


# Tests of the registry's logic look into the bucket right after a blob's 201, so they publish before answering;
# the default (publishing behind the answer) is proven where it matters: real clients (e2e), request counts, the
# replica and crash tests (real `serve` processes), and tests/integration/test_background_publishing.py.
SYNCHRONOUS = {"publish_in_background": False}


def s3_settings(s3_server: S3Server, bucket: str, tmp_path: Path, **extra: object) -> Settings:
    """Settings for `bucket` on `s3_server`; `extra` overrides any of them (`s3_endpoint` of a proxy, say)."""
    return Settings(
        **{
            "storage": "s3",
            "s3_endpoint": s3_server.endpoint,
            "s3_bucket": bucket,
            "s3_access_key": s3_server.access_key,
            "s3_secret_key": s3_server.secret_key,
            "s3_region": s3_server.region,
            "staging_dir": tmp_path / "staging",
        }
        | SYNCHRONOUS
        | extra
    )


def proxied_settings(s3_server: S3Server, bucket: str, tmp_path: Path, proxy: FaultProxy, **extra: object) -> Settings:
    """Settings of a registry that reaches the bucket only through `proxy` (faults, latency, request counts)."""
    return s3_settings(s3_server, bucket, tmp_path, s3_endpoint=proxy.endpoint, **extra)


def filesystem_settings(tmp_path: Path, **extra: object) -> Settings:
    extra = SYNCHRONOUS | extra
    return Settings(storage="filesystem", data_dir=tmp_path / "data", staging_dir=tmp_path / "staging", **extra)


@pytest.fixture(params=BACKENDS)
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    extra = getattr(request, "param_extra", {})
    if request.param == "s3":
        s3_server = request.getfixturevalue("s3_server")
        return s3_settings(s3_server, request.getfixturevalue("bucket"), tmp_path, **extra)
    return filesystem_settings(tmp_path, **extra)


class BucketView:
    """What is in the store, seen from outside the service (boto3 for S3, the directory for filesystem)."""

    def __init__(self, settings: Settings, s3_server: S3Server | None) -> None:
        self.settings = settings
        self.s3_server = s3_server

    def objects(self) -> dict[str, tuple[int, str]]:
        """Every key with its size and stored Content-Type."""
        if self.settings.storage == "s3":
            assert self.s3_server is not None
            found = self.s3_server.objects(self.settings.s3_bucket, self.settings.s3_prefix)
            prefix = f"{self.settings.s3_prefix}/" if self.settings.s3_prefix else ""
            return {key[len(prefix) :]: (meta.size, meta.content_type) for key, meta in found.items()}
        root = self.settings.data_dir
        out = {}
        for path in root.rglob("*"):
            key = path.relative_to(root).as_posix()
            if path.is_file() and not key.startswith("."):
                meta = json.loads((root / ".meta" / (key + ".json")).read_text())
                out[key] = (path.stat().st_size, meta["content_type"])
        return out

    def keys(self) -> set[str]:
        return set(self.objects())


@pytest.fixture
def bucket_view(settings: Settings, request: pytest.FixtureRequest) -> BucketView:
    s3_server = request.getfixturevalue("s3_server") if settings.storage == "s3" else None
    return BucketView(settings, s3_server)


@pytest.fixture
def registry_url(settings: Settings) -> Iterator[str]:
    with running_registry(settings) as url:
        yield url


@pytest.fixture
def client(registry_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=registry_url, timeout=60) as http:
        yield http
