"""`kill -9` of one of three replicas (each with its own staging directory, behind a balancer that sends every
request to the next) while it holds a push's upload session with a multipart upload open: the client's retry
succeeds through the others, nothing partial is visible in the bucket, and the next `gc --delete` (run at once,
long before the grace) leaves no multipart upload and no record of one behind."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from app.layout import MULTIPART_RECORDS
from app.storage.s3 import S3Storage
from app.tools.gc import gc
from app.tools.gc_run import RunTiming
from tests.conftest import s3_settings
from tests.e2e.bucket import BucketLayout, sha256
from tests.e2e.clients import skopeo
from tests.faults.conftest import PART_SIZE, ROOT, wait_until_up
from tests.support.fault_proxy import FaultProxy, storj_rules
from tests.support.images import make_layer, oci_ref, write_image
from tests.support.round_robin import RoundRobinProxy
from tests.support.seaweed import S3Server
from tests.support.tools import free_port

pytestmark = pytest.mark.e2e

REPLICAS = 3
SECRET = "peer-secret-for-the-kill-test"
BIG_LAYER = 4 * PART_SIZE + 12345  # several parts: the holder has a multipart upload open when it dies


@contextmanager
def replicas(s3_server: S3Server, bucket: str, proxy: FaultProxy, workdir: Path) -> Iterator[list[Replica]]:
    ports = [free_port() for _ in range(REPLICAS)]
    peers = ",".join(f"http://127.0.0.1:{port}" for port in ports)
    started = []
    try:
        for index, port in enumerate(ports):
            started.append(Replica(index, port, peers, s3_server, bucket, proxy, workdir))
        for replica in started:
            wait_until_up(replica.process, replica.url, replica.log)
        time.sleep(1.5)  # three refreshes of REGISTRY_PEERS_REFRESH_SECONDS: they know each other
        yield started
    finally:
        for replica in started:
            replica.process.kill()
            replica.process.wait(timeout=10)


class Replica:
    def __init__(
        self, index: int, port: int, peers: str, s3_server: S3Server, bucket: str, proxy: FaultProxy, workdir: Path
    ) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.staging = workdir / f"staging-{index}"
        self.log = workdir / f"replica-{index}.log"
        env = {
            "REGISTRY_STORAGE": "s3",
            "REGISTRY_S3_ENDPOINT": proxy.endpoint,
            "REGISTRY_S3_BUCKET": bucket,
            "REGISTRY_S3_ACCESS_KEY": s3_server.access_key,
            "REGISTRY_S3_SECRET_KEY": s3_server.secret_key,
            "REGISTRY_S3_REGION": s3_server.region,
            "REGISTRY_S3_PART_SIZE": str(PART_SIZE),
            "REGISTRY_STAGING_DIR": str(self.staging),
            "REGISTRY_PEERS": peers,
            "REGISTRY_ADVERTISE_URL": self.url,
            "REGISTRY_PEER_SECRET": SECRET,
            "REGISTRY_PEERS_REFRESH_SECONDS": "0.5",
            "REGISTRY_GC_WATCH_SECONDS": "0.5",
        }
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app", "serve", "--port", str(port)],
                cwd=ROOT,
                env={**os.environ, **env},
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def sessions(self) -> list[Path]:
        if not self.staging.is_dir():
            return []
        return [entry for entry in self.staging.iterdir() if len(entry.name) == 32 and (entry / "data").exists()]


def kill_the_holder_of_the_big_layer(
    fleet: list[Replica], balancer: RoundRobinProxy, killed: list[int], stop: threading.Event
) -> None:
    """Once a replica's session has staged more than two parts of the big layer, kill -9 that replica; the
    balancer drops it, as a Service drops a pod whose readiness probe fails."""
    while not stop.is_set():
        for index, replica in enumerate(fleet):
            for session in replica.sessions():
                try:
                    staged = (session / "data").stat().st_size
                except FileNotFoundError:
                    continue
                if staged > 2 * PART_SIZE:
                    os.kill(replica.process.pid, signal.SIGKILL)
                    killed.append(index)
                    balancer.set_backends([other.url for other in fleet if other is not replica])
                    return
        time.sleep(0.01)


def test_a_replica_killed_mid_push_costs_the_client_a_retry_and_leaves_nothing_after_gc(
    s3_server: S3Server, tmp_path: Path
) -> None:
    bucket = s3_server.new_bucket("killed")
    image = tmp_path / "image"
    write_image(image, "v1", [make_layer(11, 3000), make_layer(12, BIG_LAYER)])
    with ExitStack() as stack:
        proxy = stack.enter_context(FaultProxy(s3_server.endpoint, latency=0.02))
        for fault in storj_rules():
            proxy.add(fault)
        fleet = stack.enter_context(replicas(s3_server, bucket, proxy, tmp_path))
        balancer = stack.enter_context(RoundRobinProxy([replica.url for replica in fleet]))
        killed: list[int] = []
        stop = threading.Event()
        killer = threading.Thread(target=kill_the_holder_of_the_big_layer, args=(fleet, balancer, killed, stop))
        killer.start()
        copy = ("copy", "--dest-tls-verify=false", "--retry-times", "3", oci_ref(image, "v1"),
                f"docker://{balancer.address}/killed/app:v1")  # fmt: skip
        try:
            skopeo(*copy)
        except AssertionError as failed:
            # skopeo retries a 404 BLOB_UPLOAD_UNKNOWN (what a forwarding replica answers for the dead one's
            # session) and a reset connection, but not a connection closed under a PATCH it was writing straight
            # to the dead replica: then the CI job's retry of the command is the client's retry.
            assert "use of closed network connection" in str(failed), failed
            skopeo(*copy)
        finally:
            stop.set()
            killer.join()
        assert killed, "the big layer never reached a replica's staging"

        layout = BucketLayout(s3_server.client(), bucket)
        digest = sha256(layout.get("v2/killed/app/manifests/v1").body)
        layout.check_pushed("killed/app", "v1", digest)  # every digest checked, read from the bucket
        listed = httpx.get(f"http://{balancer.address}/v2/killed/app/tags/list", timeout=30).json()["tags"]
        assert listed == ["v1"]

        storage = S3Storage(s3_settings(s3_server, bucket, tmp_path))
        out = io.StringIO()
        gc(storage, delete=True, grace_seconds=3600, timing=RunTiming(settle_seconds=5, mark_seconds=5), out=out)
        unfinished = s3_server.admin.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        assert unfinished == [], out.getvalue()
        assert list(storage.list(MULTIPART_RECORDS)) == []  # the dead replica's record went with its upload
