"""Two replicas sharing a staging directory, behind a balancer that sends every request to the next replica: eight
skopeo and eight docker pushes at once all succeed on their first attempt, each tag is in `tags/list` right after
its push, and the store requests per push stay within 1.1 times those of one replica. On a store with no latency
(where stale memory shows most) and at 50 ms per request (a WAN away).

docker is the strict client here: after each blob's 201 it HEADs the blob, often through the other replica.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import proxied_settings
from tests.e2e.clients import skopeo
from tests.support.daemons import Daemon
from tests.support.fault_proxy import FaultProxy
from tests.support.images import make_layer, oci_ref, write_image
from tests.support.registry_server import running_registry
from tests.support.round_robin import RoundRobinProxy
from tests.support.seaweed import S3Server

pytestmark = pytest.mark.e2e

PUSHES = 8
MAX_REQUEST_RATIO = 1.1  # the issue asks for 1.2; replicas sharing staging take turns at documents (1.03-1.06 seen)


@dataclass
class Target:
    address: str  # host:port clients push to
    proxy: FaultProxy  # in front of the store: counts what the pushes cost


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory, dockerd: Daemon) -> list[Path]:
    """PUSHES layouts for skopeo, and the same images loaded into docker (as `loaded/N:v1`)."""
    work = tmp_path_factory.mktemp("round-robin-images")
    layouts = []
    for number in range(PUSHES):
        layout = work / f"image-{number}"
        write_image(layout, "v1", [make_layer(5000 + number, 3000), make_layer(6000 + number, 2000)])
        archive = layout.with_suffix(".tar")
        skopeo("copy", oci_ref(layout, "v1"), f"docker-archive:{archive}:loaded/{number}:v1")
        dockerd.run("load", "--input", str(archive))
        layouts.append(layout)
    return layouts


@pytest.fixture
def start(s3_server: S3Server, tmp_path: Path) -> Iterator[Callable[[float, int], Target]]:
    """Start `replicas` replicas (one staging directory) over a fresh bucket, the store `latency` s away."""
    with ExitStack() as stack:

        def started(latency: float, replicas: int) -> Target:
            proxy = stack.enter_context(FaultProxy(s3_server.endpoint, latency=latency))
            workdir = tmp_path / f"cluster-{replicas}-{latency}"
            settings = proxied_settings(
                s3_server, s3_server.new_bucket("rr"), workdir, proxy, publish_in_background=True, gc_watch_seconds=300
            )
            urls = [stack.enter_context(running_registry(settings)) for _ in range(replicas)]
            if replicas == 1:
                address = urls[0].removeprefix("http://")
            else:
                address = stack.enter_context(RoundRobinProxy(urls)).address
            proxy.quiet()
            proxy.forget_requests()
            return Target(address, proxy)

        yield started


def push_all(target: Target, images: list[Path], dockerd: Daemon) -> list[str]:
    """Eight skopeo pushes and eight docker pushes at once; what went wrong (empty: nothing)."""
    problems: list[str] = []
    start = threading.Barrier(2 * PUSHES)

    def skopeo_push(number: int) -> None:
        tag = f"skopeo-{number}"
        start.wait()
        try:
            skopeo("copy", "--dest-tls-verify=false", "--retry-times", "0", oci_ref(images[number], "v1"),
                   f"docker://{target.address}/rr/app:{tag}")  # fmt: skip
        except AssertionError as exc:
            problems.append(f"{tag}: {exc}")
            return
        listed_right_after(target, tag, problems)

    def docker_push(number: int) -> None:
        tag = f"docker-{number}"
        reference = f"{target.address}/rr/app:{tag}"
        dockerd.run("tag", f"loaded/{number}:v1", reference)
        start.wait()
        try:
            output = dockerd.run("push", reference)
        except AssertionError as exc:
            problems.append(f"{tag}: {exc}")
            return
        if "Retrying" in output:
            problems.append(f"{tag}: docker retried: {output}")
        listed_right_after(target, tag, problems)

    with ThreadPoolExecutor(2 * PUSHES) as pool:
        jobs = [pool.submit(skopeo_push, n) for n in range(PUSHES)] + [
            pool.submit(docker_push, n) for n in range(PUSHES)
        ]
        for job in jobs:
            job.result()
    for number in range(PUSHES):
        dockerd.run("rmi", f"{target.address}/rr/app:docker-{number}")
    return problems


def listed_right_after(target: Target, tag: str, problems: list[str]) -> None:
    listed = httpx.get(f"http://{target.address}/v2/rr/app/tags/list", timeout=30).json()["tags"]
    if tag not in listed:
        problems.append(f"{tag} is not in tags/list right after its push: {listed}")


@pytest.mark.parametrize("latency", [0.0, 0.05], ids=["no-latency", "50ms"])
def test_pushes_through_two_replicas_behind_a_round_robin_all_succeed_at_one_replicas_cost(
    start: Callable[[float, int], Target], images: list[Path], dockerd: Daemon, latency: float
) -> None:
    single = start(latency, 1)
    assert push_all(single, images, dockerd) == []
    single.proxy.quiet()
    one_replica = len(single.proxy.seen)

    pair = start(latency, 2)
    assert push_all(pair, images, dockerd) == []
    pair.proxy.quiet()
    two_replicas = len(pair.proxy.seen)
    assert two_replicas <= MAX_REQUEST_RATIO * one_replica, (pair.proxy.operations(), single.proxy.operations())
