"""Two replicas over one store and one staging directory, behind a balancer that sends each request to the next
replica: the deployment where every shared key meets concurrent writers. Each store kind: the filesystem store,
S3 on SeaweedFS (which honours If-Match), and S3 under Storj's rules (no If-Match, a write a second per key)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.settings import Settings
from app.storage import Storage, open_storage
from tests.conftest import filesystem_settings, proxied_settings
from tests.support.fault_proxy import FaultProxy, no_conditional_overwrite
from tests.support.registry_server import running_registry
from tests.support.round_robin import RoundRobinProxy

STORES = ["filesystem", "s3", "s3-storj-rules"]


@dataclass
class Cluster:
    settings: Settings
    replicas: list[str]  # each replica's URL
    url: str  # the balancer's
    proxy: FaultProxy | None  # between the replicas and S3, counting requests

    def storage(self) -> Storage:
        return open_storage(self.settings)


@pytest.fixture(params=STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    return request.param


def cluster_settings(
    request: pytest.FixtureRequest, store_kind: str, tmp_path: Path, stack: ExitStack, **extra: object
):
    if store_kind == "filesystem":
        return filesystem_settings(tmp_path, **extra), None
    s3_server = request.getfixturevalue("s3_server")
    proxy = stack.enter_context(FaultProxy(s3_server.endpoint))
    if store_kind == "s3-storj-rules":
        proxy.add(no_conditional_overwrite())
    settings = proxied_settings(s3_server, request.getfixturevalue("bucket"), tmp_path, proxy, **extra)
    return settings, proxy


IMMUTABLE_POLICY = 'immutable:\n  - repositories: ["release/*"]\n    tags: ["v*"]\n'


@pytest.fixture
def cluster(request: pytest.FixtureRequest, store_kind: str, tmp_path: Path) -> Iterator[Cluster]:
    """Parametrise indirectly with settings to override; `"immutable": True` writes a policy (release/*: v*)."""
    extra = dict(getattr(request, "param", {}))
    if extra.pop("immutable", False):
        extra["policy"] = tmp_path / "policy.yaml"
        extra["policy"].write_text(IMMUTABLE_POLICY)
    with ExitStack() as stack:
        settings, proxy = cluster_settings(request, store_kind, tmp_path, stack, **extra)
        replicas = [stack.enter_context(running_registry(settings)) for _ in range(2)]
        balancer = stack.enter_context(RoundRobinProxy(replicas))
        yield Cluster(settings, replicas, balancer.url, proxy)
