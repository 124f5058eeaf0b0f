"""Fixtures for `copy` and `sync`: upstream registries, the CLI run in-process, pulls back from the bucket."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from app.cli import main
from app.settings import Settings
from tests.conftest import filesystem_settings
from tests.e2e.clients import skopeo
from tests.mirror.upstream import PASSWORD, USER, Content, Upstream, fill, reference_upstream
from tests.support.registry_server import running_registry
from tests.support.seaweed import S3Server
from tests.support.static_server import StaticBucketServer

SETTING_FIELDS = (
    "storage",
    "data_dir",
    "staging_dir",
    "s3_endpoint",
    "s3_bucket",
    "s3_access_key",
    "s3_secret_key",
    "s3_region",
    "s3_prefix",
    "s3_max_attempts",
    "s3_part_size",
    "share_min_bytes",
    "publish_in_background",
)


@dataclass(frozen=True)
class Filled:
    upstream: Upstream
    content: Content

    @property
    def host(self) -> str:
        return self.upstream.address


@dataclass(frozen=True)
class Run:
    status: int
    out: str
    err: str

    def json(self) -> dict[str, Any]:
        return json.loads(self.out)


def settings_environment(settings: Settings) -> dict[str, str]:
    """The REGISTRY_* variables that make `load_settings()` return `settings` (what a CI job would export)."""
    return {f"REGISTRY_{name.upper()}": str(getattr(settings, name)) for name in SETTING_FIELDS}


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Run]:
    """`storj-registry ARGS` in this process against `settings` (environment as `serve` reads it)."""

    def run(settings: Settings, *args: str) -> Run:
        with monkeypatch.context() as patch:
            for name, value in settings_environment(settings).items():
                patch.setenv(name, value)
            out, err = io.StringIO(), io.StringIO()
            with redirect_stdout(out), redirect_stderr(err):
                status = main(list(args))
        return Run(status, out.getvalue(), err.getvalue())

    return run


def write_htpasswd(path: Path) -> Path:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    path.write_text(f"{USER}:$2y${hashed[4:]}\n")  # distribution reads `$2y$`, as htpasswd -B writes it
    return path


@pytest.fixture(scope="session")
def anonymous(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Filled]:
    work = tmp_path_factory.mktemp("upstream-anonymous")
    with reference_upstream(work / "registry") as upstream:
        yield Filled(upstream, fill(upstream, work / "images", referrers_api=False))


@pytest.fixture(scope="session")
def basic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Filled]:
    work = tmp_path_factory.mktemp("upstream-basic")
    with reference_upstream(work / "registry", write_htpasswd(work / "htpasswd")) as upstream:
        yield Filled(upstream, fill(upstream, work / "images", referrers_api=False))


@pytest.fixture(scope="session")
def token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Filled]:
    """This service as the upstream, with the docker token flow and a referrers API."""
    work = tmp_path_factory.mktemp("upstream-token")
    settings = filesystem_settings(work, auth_htpasswd=write_htpasswd(work / "htpasswd"), auth_token_enabled=True)
    with running_registry(settings) as url:
        upstream = Upstream(url.removeprefix("http://"), (USER, PASSWORD), token_flow=True)
        yield Filled(upstream, fill(upstream, work / "images", referrers_api=True))


@contextlib.contextmanager
def pull_side(settings: Settings, s3_server: S3Server | None) -> Iterator[str]:
    """Where clients pull what was copied: the linksharing stand-in over the bucket, or the service on a directory."""
    if settings.storage == "s3":
        assert s3_server is not None
        with StaticBucketServer(s3_server, settings.s3_bucket) as static:
            yield static.url.removeprefix("http://")
    else:
        with running_registry(settings) as url:
            yield url.removeprefix("http://")


@pytest.fixture
def pull(settings: Settings, request: pytest.FixtureRequest) -> Iterator[str]:
    s3_server = request.getfixturevalue("s3_server") if settings.storage == "s3" else None
    with pull_side(settings, s3_server) as host:
        yield host


def pulled_digest(host: str, reference: str) -> str:
    """The digest of the manifest bytes a client gets for `NAME:TAG` (or `NAME@DIGEST`) from `host`."""
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{host}/{reference}")
    return "sha256:" + hashlib.sha256(raw.encode()).hexdigest()


def pull_all(host: str, reference: str, into: Path) -> None:
    """Pull every platform and blob with skopeo, keeping digests (it checks each blob against its digest)."""
    source = f"docker://{host}/{reference}"
    skopeo("copy", "--all", "--preserve-digests", "--src-tls-verify=false", source, f"dir:{into}")
