"""Replicas behind a balancer that sends every request to the next replica: eight skopeo and eight docker pushes
at once all succeed on their first attempt, each tag is in `tags/list` right after its push, each image is whole in
the bucket (every digest checked), and the store requests per push stay close to those of one replica. On a store
with no latency (where stale memory shows most) and at 50 ms per request (a WAN away). Two topologies:

- three replicas, each with its own staging directory (what the chart gives), through a store with Storj's rules:
  each repository's requests are forwarded to its owner, each session's to its holder (app/cluster/);
- two replicas sharing one staging directory (a ReadWriteMany volume): any replica continues any session.

docker is the strict client here: after each blob's 201 it HEADs the blob, often through another replica.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.settings import Settings
from tests.conftest import proxied_settings
from tests.e2e.bucket import BucketLayout, sha256
from tests.e2e.clients import skopeo
from tests.support.cluster import Cluster
from tests.support.daemons import Daemon
from tests.support.fault_proxy import FaultProxy, storj_rules
from tests.support.images import make_layer, oci_ref, write_image
from tests.support.registry_server import running_registry
from tests.support.round_robin import RoundRobinProxy
from tests.support.seaweed import S3Server

pytestmark = pytest.mark.e2e

PUSHES = 8
MAX_REQUEST_RATIO = {"own-staging": 1.2, "shared-staging": 1.1}  # shared: turns at documents (1.03-1.06 seen)


@dataclass
class Target:
    address: str  # host:port clients push to
    proxy: FaultProxy  # in front of the store: counts what the pushes cost
    bucket: BucketLayout  # the bucket, read directly


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
def start(s3_server: S3Server, tmp_path: Path) -> Iterator[Callable[[float, int, str], Target]]:
    """Start `replicas` replicas of `topology` over a fresh bucket, the store `latency` s away."""
    with ExitStack() as stack:

        def started(latency: float, replicas: int, topology: str) -> Target:
            proxy = stack.enter_context(FaultProxy(s3_server.endpoint, latency=latency))
            if topology == "own-staging":
                for fault in storj_rules():
                    proxy.add(fault)
            workdir = tmp_path / f"{topology}-{replicas}-{latency}"
            bucket = s3_server.new_bucket("rr")

            def settings_for(index: int, peering: dict[str, object]) -> Settings:
                return proxied_settings(
                    s3_server, bucket, workdir / str(index), proxy,
                    publish_in_background=True, gc_watch_seconds=300, **peering,
                )  # fmt: skip

            if replicas == 1:
                urls = [stack.enter_context(running_registry(settings_for(0, {})))]
            elif topology == "own-staging":
                cluster = stack.enter_context(Cluster(replicas, settings_for))
                cluster.start_all()
                urls = cluster.urls
            else:
                urls = [stack.enter_context(running_registry(settings_for(0, {}))) for _ in range(replicas)]
            address = urls[0].removeprefix("http://")
            if replicas > 1:
                address = stack.enter_context(RoundRobinProxy(urls)).address
            proxy.quiet()
            proxy.forget_requests()
            return Target(address, proxy, BucketLayout(s3_server.client(), bucket))

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


def whole_in_the_bucket(target: Target) -> None:
    """Every tag pushed, read from the bucket: its manifest, config and layers each hash to their digest."""
    for tag in [f"{client}-{n}" for client in ("skopeo", "docker") for n in range(PUSHES)]:
        digest = sha256(target.bucket.get(f"v2/rr/app/manifests/{tag}").body)
        target.bucket.check_pushed("rr/app", tag, digest)


@pytest.mark.parametrize(
    ("topology", "replicas", "latency"),
    [("own-staging", 3, 0.0), ("own-staging", 3, 0.05), ("shared-staging", 2, 0.05)],
    ids=["own-staging-no-latency", "own-staging-50ms", "shared-staging-50ms"],
)
def test_pushes_through_replicas_behind_a_round_robin_all_succeed_at_one_replicas_cost(
    start: Callable[[float, int, str], Target],
    images: list[Path],
    dockerd: Daemon,
    latency: float,
    topology: str,
    replicas: int,
) -> None:
    single = start(latency, 1, topology)
    assert push_all(single, images, dockerd) == []
    single.proxy.quiet()
    one_replica = len(single.proxy.seen)

    several = start(latency, replicas, topology)
    assert push_all(several, images, dockerd) == []
    several.proxy.quiet()
    whole_in_the_bucket(several)
    cost = len(several.proxy.seen)
    assert cost <= MAX_REQUEST_RATIO[topology] * one_replica, (several.proxy.operations(), single.proxy.operations())


def test_pushes_all_succeed_while_a_replica_joins_and_another_leaves(
    s3_server: S3Server, tmp_path: Path, images: list[Path], dockerd: Daemon
) -> None:
    """Three replicas of four slots (own staging, Storj's rules, 50 ms away); during the pushes the fourth joins
    and the first drains and leaves, as in a rolling update: every push still succeeds on its first attempt."""
    bucket = s3_server.new_bucket("rr")
    with ExitStack() as stack:
        proxy = stack.enter_context(FaultProxy(s3_server.endpoint, latency=0.05))
        for fault in storj_rules():
            proxy.add(fault)

        def settings_for(index: int, peering: dict[str, object]) -> Settings:
            return proxied_settings(
                s3_server, bucket, tmp_path / str(index), proxy,
                publish_in_background=True, gc_watch_seconds=300, **peering,
            )  # fmt: skip

        cluster = stack.enter_context(Cluster(4, settings_for))
        cluster.start_all(3)
        balancer = stack.enter_context(RoundRobinProxy(cluster.urls))
        target = Target(balancer.address, proxy, BucketLayout(s3_server.client(), bucket))
        failed: list[BaseException] = []
        changes = threading.Thread(target=change_membership, args=(cluster, balancer, failed))
        changes.start()
        problems = push_all(target, images, dockerd)
        changes.join()
        assert failed == [] and problems == []
        assert [replica.running for replica in cluster.replicas] == [False, True, True, True]
        assert {entry.backend for entry in balancer.forwarded[-20:]} == {0, 1, 2}  # the new set took requests
        whole_in_the_bucket(target)


def change_membership(cluster: Cluster, balancer: RoundRobinProxy, failed: list[BaseException]) -> None:
    """Once the pushes are under way, the fourth replica joins; a little later the first one leaves. New requests
    wait while the fourth starts (sessions under way stay open across the change), so the pushes cannot finish
    before it however loaded the machine is."""
    try:
        wait_for_requests(balancer, 30)
        balancer.hold()
        try:
            cluster.start(3)
            cluster.wait_until_members_agree()
            balancer.set_backends(cluster.urls)
        finally:
            balancer.release()
        wait_for_requests(balancer, len(balancer.forwarded) + 30)
        balancer.set_backends(cluster.urls[1:])  # drained: the Service's endpoints drop it first
        cluster.leave(0)
    except BaseException as exc:  # reported by the test, not lost in this thread
        failed.append(exc)


def wait_for_requests(balancer: RoundRobinProxy, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while len(balancer.forwarded) < count:
        assert time.monotonic() < deadline, f"the pushes sent only {len(balancer.forwarded)} requests"
        time.sleep(0.01)
