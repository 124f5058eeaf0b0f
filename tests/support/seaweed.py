"""A real SeaweedFS S3 server (`weed mini`) for tests, bound to 127.0.0.1 on free ports only.

`weed mini` runs master, volume, filer, S3 and an admin server in one process. Every listener gets an
explicit free port so several instances (parallel test sessions, two stores in one test) coexist.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from .tools import free_port, port_is_free, require_tool

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0
START_ATTEMPTS = 3
# weed's admin worker dials the admin gRPC server at admin HTTP port + 10000 whatever -admin.port.grpc says.
GRPC_OFFSET = 10000

_running: set[S3Server] = set()


@dataclass(frozen=True)
class ObjectMeta:
    key: str
    size: int
    content_type: str | None
    cache_control: str | None


@dataclass(eq=False)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    log_path: Path | None = field(default=None, repr=False)
    ports: tuple[int, ...] = field(default=(), repr=False)
    _admin: Any = field(default=None, init=False, repr=False)

    def client(self, **config: Any) -> Any:
        """A new boto3 S3 client: path-style, checksums only when required (what Storj needs).

        `verify=False` for plain http, so the machine's AWS_CA_BUNDLE (possibly pointing nowhere on another
        machine) is never consulted; there is no TLS to verify on loopback http. `config` overrides options.
        """
        options: dict[str, Any] = {
            "s3": {"addressing_style": "path"},
            "request_checksum_calculation": "when_required",
            "response_checksum_validation": "when_required",
            "retries": {"max_attempts": 3, "mode": "standard"},
            "max_pool_connections": 32,
        }
        options.update(config)
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            verify=False if self.endpoint.startswith("http://") else None,
            config=Config(**options),
        )
        client.meta.events.register("before-send.s3", drop_expect_continue)
        return client

    @property
    def admin(self) -> Any:
        """A client cached for this module's helpers (boto3 clients are thread-safe)."""
        if self._admin is None:
            self._admin = self.client()
        return self._admin

    def create_bucket(self, name: str) -> None:
        self.admin.create_bucket(Bucket=name)

    def registry_environment(self, bucket: str) -> dict[str, str]:
        """The REGISTRY_* variables that point a `storj-registry serve` process at `bucket` on this server."""
        return {
            "REGISTRY_STORAGE": "s3",
            "REGISTRY_S3_ENDPOINT": self.endpoint,
            "REGISTRY_S3_BUCKET": bucket,
            "REGISTRY_S3_ACCESS_KEY": self.access_key,
            "REGISTRY_S3_SECRET_KEY": self.secret_key,
            "REGISTRY_S3_REGION": self.region,
        }

    def new_bucket(self, purpose: str) -> str:
        """Create a bucket with a fresh name starting with `purpose`, so tests never share state by accident."""
        name = f"{purpose}-{uuid.uuid4().hex[:12]}"
        self.create_bucket(name)
        return name

    def objects(self, bucket: str, prefix: str = "") -> dict[str, ObjectMeta]:
        """Every object under `prefix` (all pages), with the metadata a HEAD returns, keyed and sorted by key.

        `prefix` is a plain S3 prefix ("reg" also matches "regional/..."). SeaweedFS's implicit directories are
        not listed; it lists in its own tree order, hence the sort. An object deleted between the listing and its
        HEAD (a multipart record the service removes behind its answer) is left out.
        """
        keys: list[str] = []
        for page in self.admin.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        result: dict[str, ObjectMeta] = {}
        for key in sorted(keys):
            try:
                head = self.admin.head_object(Bucket=bucket, Key=key)
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                    continue
                raise
            result[key] = ObjectMeta(
                key=key,
                size=head["ContentLength"],
                content_type=head.get("ContentType"),
                cache_control=head.get("CacheControl"),
            )
        return result

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Terminate the whole process group (SIGTERM, then SIGKILL) and remove its stray /tmp sockets."""
        _running.discard(self)
        proc, self.process = self.process, None
        if proc is None:
            return
        _kill_group(proc)
        _remove_sockets(self.ports)


def drop_expect_continue(request: Any, **_: Any) -> None:
    """Send no `Expect: 100-continue` (botocore before-send hook).

    botocore keeps the status line of a response that came instead of `100 Continue` (a zero-length PUT, which
    Go servers answer at once) and parses the next response on that pooled connection against it: a 60 s
    stall, then a silent retry that writes the object twice (boto/botocore#3755). The header is not signed.
    """
    if "Expect" in request.headers:
        del request.headers["Expect"]


def start_seaweed(workdir: Path) -> S3Server:
    """Start `weed mini` with its data under `workdir` and wait until the S3 API answers ListBuckets."""
    weed = require_tool("weed")
    workdir.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    for _ in range(START_ATTEMPTS):
        server = _launch(weed, Path(tempfile.mkdtemp(prefix="weed-", dir=workdir)))
        try:
            _wait_ready(server)
        except _StartError as exc:
            server.stop()
            errors.append(str(exc))
            if not exc.retryable:
                break
            continue
        return server
    raise RuntimeError("SeaweedFS did not start:\n" + "\n---\n".join(errors))


class _StartError(Exception):
    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def _launch(weed: str, rundir: Path) -> S3Server:
    (rundir / "data").mkdir(parents=True, exist_ok=True)
    access_key, secret_key = "storj-registry-test", "storj-registry-test-secret"
    config = rundir / "s3.json"
    config.write_text(json.dumps(_identities(access_key, secret_key)))
    ports = _pick_ports()
    log_path = rundir / "weed.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [weed, "-logtostderr", "mini", *_mini_args(rundir / "data", config, ports)],
            cwd=rundir,  # weed reads filer.toml/security.toml from the working directory: keep it private
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            env=_child_env(),
        )
    server = S3Server(
        endpoint=f"http://127.0.0.1:{ports['s3']}",
        access_key=access_key,
        secret_key=secret_key,
        process=proc,
        log_path=log_path,
        ports=tuple(ports.values()),
    )
    _running.add(server)
    return server


def _identities(access_key: str, secret_key: str) -> dict[str, Any]:
    actions = ["Admin", "Read", "Write", "List", "Tagging"]
    credentials = [{"accessKey": access_key, "secretKey": secret_key}]
    return {"identities": [{"name": "tests", "credentials": credentials, "actions": actions}]}


def _pick_ports() -> dict[str, int]:
    ports: dict[str, int] = {}
    names = ["s3", "s3_grpc", "master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc"]
    for name in names:
        ports[name] = _distinct_free_port(ports.values())
    ports["admin"] = _admin_port(ports.values())
    ports["admin_grpc"] = ports["admin"] + GRPC_OFFSET
    return ports


def _distinct_free_port(taken: Any) -> int:
    taken = set(taken)
    while True:
        port = free_port()
        if port not in taken:
            return port


def _admin_port(taken: Any) -> int:
    """A free port p whose p + 10000 is free too (see GRPC_OFFSET)."""
    taken = set(taken)
    for _ in range(200):
        port = _distinct_free_port(taken)
        grpc = port + GRPC_OFFSET
        if grpc <= 65535 and grpc not in taken and port_is_free(grpc):
            return port
        taken.add(port)
    raise RuntimeError("no free port pair for the SeaweedFS admin server")


def _mini_args(data: Path, config: Path, ports: dict[str, int]) -> list[str]:
    return [
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.config={config}",
        "-admin.ui=false",
        "-webdav=false",
        "-master.telemetry=false",  # no traffic off this machine
        "-volume.preStopSeconds=0",  # faster stop; the data is throwaway
        # Every bucket is a collection with volumes of its own; the default cap (derived from free disk and a
        # large volume size) runs out after about 60 buckets and writes then fail with InternalError.
        "-master.volumeSizeLimitMB=1024",
        "-volume.max=10000",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.port={ports['s3']}",
        f"-s3.port.grpc={ports['s3_grpc']}",
        f"-master.port={ports['master']}",
        f"-master.port.grpc={ports['master_grpc']}",
        f"-volume.port={ports['volume']}",
        f"-volume.port.grpc={ports['volume_grpc']}",
        f"-filer.port={ports['filer']}",
        f"-filer.port.grpc={ports['filer_grpc']}",
        f"-admin.port={ports['admin']}",
        f"-admin.port.grpc={ports['admin_grpc']}",
    ]


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("S3_BUCKET", "S3_TABLE_BUCKET", "S3_EXTERNAL_URL"):  # weed mini reads these as defaults
        env.pop(name, None)
    return env


def _die_with_parent() -> None:
    """In the child: get SIGKILLed if the test process dies without calling stop() (Linux only)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _wait_ready(server: S3Server) -> None:
    probe = server.client(connect_timeout=1, read_timeout=2, retries={"max_attempts": 1})
    deadline = time.monotonic() + READY_TIMEOUT_S
    last_error = "no attempt"
    while time.monotonic() < deadline:
        assert server.process is not None
        code = server.process.poll()
        if code is not None:
            tail = server.log_tail()
            retryable = "address already in use" in tail
            raise _StartError(f"weed exited with {code}; log tail:\n{tail}", retryable)
        try:
            probe.list_buckets()
            return
        except Exception as exc:  # connection refused while it boots, or 503 until the filer is up
            last_error = repr(exc)
        time.sleep(0.1)
    message = f"S3 API not ready after {READY_TIMEOUT_S:.0f}s ({last_error}); log tail:\n{server.log_tail()}"
    raise _StartError(message, retryable=False)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait_s in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, STOP_TIMEOUT_S)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
        # Children outside the main process (none today) would still hold the group: make sure.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return


def _remove_sockets(ports: tuple[int, ...]) -> None:
    """weed leaves /tmp/seaweedfs-<component>-<port>.sock behind; ours are the ones named by our ports."""
    for port in ports:
        for path in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
            with contextlib.suppress(OSError):
                path.unlink()


@atexit.register
def _stop_all() -> None:
    for server in list(_running):
        server.stop()
